"""A throwaway network namespace for the benchmarks, and a way to fill it with sockets.

The namespace is named ``hslab-bench-<pid>``; it is announced on stderr before it is created
and deleted in ``__exit__`` (also on Ctrl-C, and on SIGTERM once ``run.py`` has turned SIGTERM
into ``SystemExit``). Sysctls are set INSIDE it only, through ``ip netns exec``, never on the
host. While a ``BenchNetns`` is entered, the process's MAIN thread lives in it (``setns``), so
everything the benchmark starts there (netlink sockets, ``ss`` children, psutil's reads of
``/proc/self/net``, asyncio sockets) sees the bench namespace and only it.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType

from handshake_lab.observe.base import Address
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.topo.netns import in_netns

PREFIX = "hslab-bench-"
BACKLOG = 4096

NETNS_SYSCTLS = {
    # Room for 50 000 sockets from one client address: every value is per network namespace.
    "net.ipv4.ip_local_port_range": "1024 65535",
    "net.ipv4.tcp_max_tw_buckets": "262144",
    "net.core.somaxconn": "4096",
}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class BenchNetns:
    """``with BenchNetns(): ...`` runs the block with the main thread in a fresh namespace."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{PREFIX}{os.getpid()}"
        self._inside = ExitStack()
        self._created = False

    def __enter__(self) -> BenchNetns:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("BenchNetns must be entered from the main thread")
        print(f"[bench] creating network namespace {self.name}", file=sys.stderr)
        try:
            _ip("netns", "add", self.name)
            self._created = True
            _ip("-n", self.name, "link", "set", "lo", "up")
            for key, value in NETNS_SYSCTLS.items():
                _ip("netns", "exec", self.name, "sysctl", "-qw", f"{key}={value}")
            self._inside.enter_context(in_netns(self.name))
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._leave()

    def _leave(self) -> None:
        self._inside.close()  # back to the host namespace first
        if self._created:
            subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
            self._created = False
            print(f"[bench] removed network namespace {self.name}", file=sys.stderr)


def leftover_namespaces() -> list[str]:
    """This run's bench namespace if it still exists (it should not, after a run)."""
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return [name for name in names if name == f"{PREFIX}{os.getpid()}"]


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): no TIME_WAIT left behind by the clean-up itself."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class Filled:
    """The sockets of one fill, and a small 'lab' port to filter and look up."""

    sockets: list[socket.socket] = field(default_factory=list)
    probe_port: int = 0
    probe_local: Address = field(default_factory=lambda: Address("127.0.0.1", 0))
    probe_remote: Address = field(default_factory=lambda: Address("127.0.0.1", 0))
    counts: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        for sock in self.sockets:
            _reset(sock)
        self.sockets.clear()


def _listener(filled: Filled) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filled.sockets.append(sock)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    port: int = sock.getsockname()[1]
    return sock, port


def _connect_many(
    listener: socket.socket, port: int, count: int
) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` established pairs (client, server), in batches that fit the accept queue."""
    pairs: list[tuple[socket.socket, socket.socket]] = []
    while len(pairs) < count:
        clients = []
        for _ in range(min(1024, count - len(pairs))):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.connect(("127.0.0.1", port))
            clients.append(client)
        for client in clients:
            server, _ = listener.accept()
            pairs.append((client, server))
    return pairs


def fill(total: int) -> Filled:
    """Make exactly ``total`` TCP sockets (as the kernel counts them) in mixed states.

    A probe port holds what a lab would have (listener, one connection, one TIME_WAIT: 4
    sockets). The rest is spread over up to 16 listener ports, so 4-tuples do not run out, and
    is mixed to need few file descriptors (a container may not raise RLIMIT_NOFILE): ~40 %
    TIME_WAIT (client closes first; no descriptor), ~44 % ESTABLISHED pairs whose server end
    stays in the accept queue (one descriptor per pair), ~8 % accepted ESTABLISHED pairs and
    ~8 % half-closed pairs: client closed after the server's FIN was not sent, so an orphaned
    FIN_WAIT2 and a CLOSE_WAIT server end (one descriptor). About 0.34 descriptors a socket.
    """
    if total < 5:
        raise ValueError("fill needs at least 5 sockets")
    filled = Filled()
    try:
        probe, filled.probe_port = _listener(filled)
        [(client, server)] = _connect_many(probe, filled.probe_port, 1)
        filled.sockets += [client, server]
        filled.probe_local = Address(*client.getsockname())
        filled.probe_remote = Address(*client.getpeername())
        [(tw_client, tw_server)] = _connect_many(probe, filled.probe_port, 1)
        tw_client.close()
        tw_server.close()

        listeners = min(16, max(1, total // 64))
        rest = total - 4 - listeners
        queued = rest * 22 // 100
        accepted = rest * 4 // 100
        half_closed = rest * 4 // 100
        time_wait = rest - 2 * (queued + accepted + half_closed)
        if queued // listeners + 1 >= BACKLOG:
            raise ValueError(f"{total} sockets would overflow the accept queues")
        ports = [_listener(filled) for _ in range(listeners)]
        plan = [
            ("time_wait", time_wait),
            ("half_closed", half_closed),
            ("accepted", accepted),
            ("queued", queued),
        ]
        for index, (kind, count) in enumerate(plan):
            for part in range(listeners):
                share = count // listeners + (1 if part < count % listeners else 0)
                listener, port = ports[(part + index) % listeners]
                if kind == "queued":
                    filled.sockets += _connect_only(port, share)
                    continue
                for client, server in _connect_many(listener, port, share):
                    if kind == "time_wait":
                        client.close()  # active close first: the client end keeps TIME_WAIT
                        server.close()
                    elif kind == "half_closed":
                        client.close()  # orphaned FIN_WAIT2; the server end sits in CLOSE_WAIT
                        filled.sockets.append(server)
                    else:
                        filled.sockets += [client, server]
        filled.counts = {
            "listen": listeners + 1,
            "time_wait": time_wait + 1,
            "fin_wait2+close_wait": 2 * half_closed,
            "established": 2 * (queued + accepted) + 2,
        }
        _settle(total)
    except BaseException:
        filled.close()
        raise
    return filled


def _connect_only(port: int, count: int) -> list[socket.socket]:
    """``count`` clients whose server ends stay un-accepted (ESTABLISHED, in the queue)."""
    clients = []
    for _ in range(count):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", port))
        clients.append(client)
    return clients


def _settle(total: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until the kernel's table holds exactly ``total`` sockets."""
    deadline = time.monotonic() + timeout
    with NetlinkObserver() as observer:
        while True:
            count = len(observer.snapshot())
            if count == total or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    if count != total:
        print(f"[bench] warning: asked for {total} sockets, kernel has {count}", file=sys.stderr)
