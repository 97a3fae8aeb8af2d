"""Bounded polling and small socket helpers for the netns tests.

Waits are polls with a deadline, never bare sleeps: a kernel state either shows up within the
timeout or the test fails saying what it waited for.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from handshake_lab.observe.base import SocketRecord
from handshake_lab.observe.ss import SsObserver
from handshake_lab.topo.netns import in_netns

T = TypeVar("T")


def poll_until(
    probe: Callable[[], T | None], *, timeout: float = 5.0, interval: float = 0.02, what: str
) -> T:
    """Call ``probe`` until it returns something truthy; ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last={last!r}"
            )
        time.sleep(interval)


def ss_states(ns: str, port: int) -> list[SocketRecord]:
    """The TCP sockets on ``port`` that ``ss`` sees inside ``ns``."""
    return SsObserver(netns=ns).snapshot([port])


def raw_states(ns: str, port: int) -> set[str]:
    """The ``ss`` state spellings on ``port`` inside ``ns`` (``{"LISTEN", "SYN-RECV"}``)."""
    return {record.raw_state for record in ss_states(ns, port)}


def listener(ns: str, addr: str, port: int, backlog: int = 8) -> socket.socket:
    """A listening socket created inside ``ns`` (it stays there after we switch back)."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((addr, port))
    sock.listen(backlog)
    return sock


def start_connect(ns: str, addr: str, port: int) -> socket.socket:
    """A non-blocking client socket created in ``ns`` whose connect is under way."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex((addr, port))
    return sock


def host_snapshot(sysctl_keys: list[str], names: list[str]) -> dict[str, str]:
    """What this test could change on the host: the host's value of each sysctl the pair sets
    in its namespaces, and any host nft table, link or address line naming one of ``names``
    (the pair's namespaces, veths and tables: they carry its run id). The rest of the host is
    other runs' business on a shared machine (their veths and namespaces come and go), so it
    is not compared: a whole-host diff failed whenever another run was active (issue 18)."""

    def run(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def ours(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if any(n in line for n in names))

    snap = {
        "nft": ours(run(["nft", "list", "tables"])),
        "link": ours(run(["ip", "-o", "link"])),
        "addr": ours(run(["ip", "-o", "addr"])),
    }
    for key in sysctl_keys:
        with open("/proc/sys/" + key.replace(".", "/")) as handle:
            snap[key] = handle.read()
    return snap
