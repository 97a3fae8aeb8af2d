"""An observer that fails mid-run ends the run with one clear error, never a wrong state.

In-process: ``ss`` raising ``ObserverError``, psutil reporting a state spelling it has never
used, psutil's read failing with ``FileNotFoundError`` (a ``/proc`` file gone), each on the
third snapshot. Through the CLI: a fake ``ss`` first on ``PATH`` that prints garbage, exits
non-zero with a permission error, or disappears, from the first call or after a few.
Every case: ``HandshakeLabError`` (exit 6 in the CLI, one stderr line naming the source), no
socket left on the lab's ports, and every step reported before the fault shows a real state.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import psutil
import pytest

from handshake_lab.errors import ExitStatus, HandshakeLabError, ObserverError
from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.base import Observer, SocketRecord
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.record.events import LabStarted, StepReport
from handshake_lab.spec.loader import find_lab
from handshake_lab.tcp.states import TcpState
from tests import needs
from tests.faults.support import Run, listening_on, poll_until, wait_clean
from tests.integration.labrun import Recorded

FAULT_AT = 3
STATES = {s.name for s in TcpState} | {"ABSENT"}


class SsFailingOnThird:
    """The real ``ss`` observer, except that its third snapshot raises."""

    name = "ss"

    def __init__(self) -> None:
        self.inner = SsObserver()
        self.calls = 0

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        self.calls += 1
        if self.calls == FAULT_AT:
            raise ObserverError("ss failed (exit 1): Cannot open netlink socket (injected)")
        return self.inner.snapshot(ports)


@pytest.fixture
def psutil_fault(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make the third ``psutil.net_connections`` call misbehave in the chosen way."""
    real = psutil.net_connections

    def arm(kind: str) -> None:
        calls = 0

        def fake(*args: Any, **kwargs: Any) -> list[Any]:
            nonlocal calls
            calls += 1
            conns = real(*args, **kwargs)
            if calls != FAULT_AT:
                return conns
            if kind == "missing":
                raise FileNotFoundError(2, "No such file or directory", "/proc/net/tcp")
            return [c._replace(status="HALF_OPEN_ISH") for c in conns]

        monkeypatch.setattr(psutil, "net_connections", fake)

    return arm


def _run_in_process(observers: list[Observer], loop_name: str) -> tuple[Recorded, BaseException]:
    recorded = Recorded()
    lab = find_lab("half-close")
    runner = LabRun(lab, RunOptions(loop=loop_name), observers, recorded)
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as r:
        try:
            r.run(runner.run())
        except HandshakeLabError as exc:
            return recorded, exc
    raise AssertionError("the run ended normally despite the observer fault")


def _assert_ended_cleanly(recorded: Recorded, exc: BaseException, source: str) -> None:
    assert isinstance(exc, ObserverError), repr(exc)
    assert source in str(exc)
    assert "\n" not in str(exc)
    header = recorded.events[0]
    assert isinstance(header, LabStarted)
    for event in recorded.events[1:]:
        assert isinstance(event, StepReport), "no result line after a fault"
        assert all(obs.state in STATES for obs in event.observed.values())
    ports = list(header.ports.values())
    poll_until(lambda: not listening_on(ports), timeout=5, what="listeners to close")


def test_ss_error_mid_run_ends_the_run_and_closes_sockets(loop_name: str) -> None:
    recorded, exc = _run_in_process([SsFailingOnThird(), PsutilObserver()], loop_name)
    _assert_ended_cleanly(recorded, exc, "ss")


@pytest.mark.parametrize("kind", ["unknown-state", "missing"])
def test_psutil_fault_mid_run_ends_the_run_and_closes_sockets(
    loop_name: str, kind: str, psutil_fault: Callable[[str], None]
) -> None:
    psutil_fault(kind)
    recorded, exc = _run_in_process([SsObserver(), PsutilObserver()], loop_name)
    _assert_ended_cleanly(recorded, exc, "psutil")
    if kind == "unknown-state":
        assert "HALF_OPEN_ISH" in str(exc)


FAKE_SS = """#!/bin/sh
n=$({cat} "{counter}" 2>/dev/null || echo 0)
echo $((n + 1)) > "{counter}"
if [ "$n" -ge {after} ]; then
{fault}
fi
exec {real} "$@"
"""

FAULTS = {
    "garbage": 'echo "this is not ss output at all"; exit 0',
    "unknown-state": 'echo "HALF-OPEN-ISH 0 0 127.0.0.1:1 127.0.0.1:2"; exit 0',
    "permission": 'echo "Cannot open netlink socket: Permission denied" >&2; exit 1',
    "vanished": '{rm} -f "$0"; exit 127',
}


def _real_ss() -> str:
    for base in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(f"{base}/ss", os.X_OK):
            return f"{base}/ss"
    needs.unavailable("ss is not installed (apt install iproute2)")


@pytest.mark.parametrize("after", [0, FAULT_AT], ids=["first-call", "mid-run"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_ss_is_exit_6_naming_ss(tmp_path: Path, fault: str, after: int) -> None:
    fake = tmp_path / "bin" / "ss"
    fake.parent.mkdir()
    # PATH is the fake's directory alone: when the fake removes itself, no real ss is found.
    cat, rm = shutil.which("cat"), shutil.which("rm")
    fault_text = FAULTS[fault].format(rm=rm)
    fake.write_text(
        FAKE_SS.format(
            counter=tmp_path / "calls", after=after, fault=fault_text, real=_real_ss(), cat=cat
        )
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    # HSLAB_SYSTEM_DIRS empty: the real ss in /usr/bin is not looked for either.
    env = {**os.environ, "PATH": str(fake.parent), "HSLAB_SYSTEM_DIRS": ""}
    run = Run.start("half-close", "--topology", "loopback", env=env)
    try:
        rc = run.finish(timeout=60)
    finally:
        run.kill_now()
    assert rc == ExitStatus.MISSING_DEPENDENCY, (rc, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "ss" in lines[0]
    assert all(e["event"] != "result" for e in run.events)
    for event in run.events[1:]:
        assert all(obs["state"] in STATES for obs in event["observed"].values())
    assert wait_clean(run.pid, run.ports) == {}
