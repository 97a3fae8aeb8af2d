"""Start a lab run as a user would, stop it at a chosen step, and list what it left behind.

Shared by ``tests/faults`` and ``bench/soak.py``. Everything a run creates carries its pid:
namespaces ``hslab-<pid>-<hex>-srv|cli``, the trace instance ``hslab-<pid>-<hex>``, the
registry file ``<pid>-<hex>.json`` and the agent's ``--netns hslab-<pid>-...`` argument. So
leftovers are looked up by the run's pid: a concurrent run (another test, the soak) is never
mistaken for this run's leftover, and this run's leftovers are never hidden by it.
Waits are bounded polls.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from handshake_lab import tools
from handshake_lab.topo.registry import TRACE_INSTANCE_DIRS, registry_dir
from tests.schema_check import assert_valid_event

CLI = [sys.executable, "-m", "handshake_lab"]
T = TypeVar("T")


def poll_until(probe: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str) -> T:
    """Call ``probe`` until it returns something truthy; ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last={last!r}"
            )
        time.sleep(interval)


def _default_sigint() -> None:
    # "cmd &" starts children with SIGINT ignored; a user at a terminal has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout


# --- what a run leaves -------------------------------------------------------------------------


def netns_names() -> list[str]:
    """Every namespace name ``ip netns list`` shows (first word of each line)."""
    return sorted(line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line)


def host_nft_tables(pid: int) -> list[str]:
    """Host nft tables of run ``pid`` (``hslab_<pid>_...``): there must never be any (a run's
    tables live inside its namespaces). Other runs' tables are theirs to answer for."""
    nft = tools.find("nft")  # /usr/sbin too: a normal user's PATH may lack it
    if nft is None:
        return []  # no nft on this machine (a bare one): no run can have made a table
    tag = f"hslab_{pid}_"
    return [line for line in _run([nft, "list", "tables"]).splitlines() if tag in line]


def agent_token_dirs(pid: int) -> list[str]:
    """``/tmp/hslab-agent-<pid>-*``: the directory holding a netns-agent run's token."""
    return sorted(p.name for p in Path(tempfile.gettempdir()).glob(f"hslab-agent-{pid}-*"))


def listening_on(ports: Iterable[int]) -> list[str]:
    """Host LISTEN sockets on ``ports`` (TIME_WAIT is the kernel's, not a leftover)."""
    wanted = set(ports)
    lines = []
    for line in _run(["ss", "-tlnH"]).splitlines():
        fields = line.split()
        if len(fields) >= 4:
            port = fields[3].rpartition(":")[2]
            if port.isdigit() and int(port) in wanted:
                lines.append(line)
    return lines


def agent_processes(tag: str) -> list[int]:
    """Agents (``handshake_lab.agent``) whose command line mentions ``tag``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "handshake_lab.agent" in cmdline and tag in cmdline:
            found.append(proc.info["pid"])
    return found


def leftovers(pid: int, ports: Iterable[int] = ()) -> dict[str, list[str]]:
    """What run ``pid`` left: empty lists everywhere means nothing."""
    tag = f"hslab-{pid}-"
    traces = []
    for base in TRACE_INSTANCE_DIRS:
        try:
            traces += [p.name for p in base.iterdir() if p.name.startswith(tag)]
        except OSError:
            continue
    try:
        registry = sorted(p.name for p in registry_dir().glob(f"{pid}-*.json"))
    except OSError:
        registry = []
    found = {
        "netns": [name for name in netns_names() if name.startswith(tag)],
        "nft": host_nft_tables(pid),
        "tmp": agent_token_dirs(pid),
        "trace": sorted(set(traces)),
        "agent": [str(p) for p in agent_processes(tag)],
        "listen": listening_on(ports),
        "registry": registry,
    }
    return {kind: names for kind, names in found.items() if names}


def wait_clean(pid: int, ports: Iterable[int] = (), timeout: float = 10.0) -> dict[str, list[str]]:
    """Poll until run ``pid`` left nothing; return what is still there after ``timeout``."""
    ports = tuple(ports)
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(pid, ports)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


# --- a run as a subprocess ---------------------------------------------------------------------


def valid(event: dict[str, Any]) -> dict[str, Any]:
    """``event``, once it is valid by the published schema (even when the run was cut short,
    every line it wrote is whole and valid)."""
    assert_valid_event(event, "run --json")
    return event


@dataclass
class Run:
    """``handshake-lab run LAB --json`` as a child, its stdout read line by line in a thread."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _threads: list[threading.Thread] = field(default_factory=list)
    _err: str = ""
    stderr: str = ""

    @classmethod
    def start(
        cls, lab: str, *args: str, env: dict[str, str] | None = None, own_group: bool = False
    ) -> Run:
        """``own_group``: the run leads a process group of its own, so a signal can reach it
        and its children together, as a terminal's SIGHUP, Ctrl-C or Ctrl-\\ would."""
        proc = subprocess.Popen(
            [*CLI, "run", lab, "--json", *args],
            start_new_session=own_group,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads in the child before exec
        )
        run = cls(proc)
        run._threads = [
            threading.Thread(target=run._read, daemon=True),
            threading.Thread(target=run._read_err, daemon=True),
        ]
        for thread in run._threads:
            thread.start()
        return run

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self._err = self.proc.stderr.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def header(self) -> dict[str, Any]:
        return self.events[0]

    @property
    def ports(self) -> list[int]:
        return sorted(self.header.get("ports", {}).values()) if self.events else []

    def wait_events(self, count: int, timeout: float = 60.0) -> bool:
        """Wait until ``count`` events (header = 1, then one per step) have been read.

        False if the run's output ended first."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty as exc:
                raise AssertionError(
                    f"no event {count} after {timeout:g} s; got {len(self.events)}"
                ) from exc
            if line is None:
                self._lines.put(None)
                return False
            self.events.append(valid(json.loads(line)))
        return True

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for exit, then for the rest of stdout (into ``events``) and stderr. Kills on
        timeout (and re-raises)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for thread in self._threads:
                thread.join(timeout=10)
            self.stderr = self._err
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        while True:
            line = self._lines.get()
            if line is None:
                self._lines.put(None)
                break
            self.events.append(valid(json.loads(line)))
        return self.proc.returncode

    def kill_now(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def doctor_cleanup(dry_run: bool, pid: int | None = None) -> subprocess.CompletedProcess[str]:
    """``doctor --cleanup --pid PID``: only run ``pid``'s leftovers. A host-wide sweep would
    remove a concurrent suite's SIGKILLed run while that suite is about to count it; tests
    always pass ``pid`` (the soak's final report alone lists the whole host)."""
    args = ["doctor", "--cleanup"] + (["--pid", str(pid)] if pid is not None else [])
    args += ["--dry-run"] if dry_run else []
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def kill_points(steps: int) -> dict[signal.Signals, int]:
    """Which step each signal follows in the tests (the soak kills after every step).

    SIGINT after step 1 (the first action done, a listener up), SIGTERM after the middle step
    (connections in their most interesting states), SIGKILL after the last-but-one step (the
    most objects alive, the step that often holds segments still running). Across the labs
    this covers the first, middle and late states of every lab with each signal kind.
    """
    return {
        signal.SIGINT: 1,
        signal.SIGTERM: max(1, (steps + 1) // 2),
        signal.SIGKILL: max(1, steps - 1),
    }


def is_root() -> bool:
    return os.geteuid() == 0


def registry_files() -> list[Path]:
    try:
        return sorted(registry_dir().glob("*.json"))
    except OSError:
        return []
