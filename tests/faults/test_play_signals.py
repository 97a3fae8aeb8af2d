"""Ending a ``play`` session at any point leaves nothing: Ctrl-C (SIGINT), SIGTERM and SIGHUP
at the prompt and in the middle of an action, an idle timeout, and EOF; with ``--browser`` also
the page's ``quit``, and the page's server is closed after each. Only this session's
objects are looked for (``support.leftovers``: names carry its pid)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus
from tests.faults.support import CLI, wait_clean

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Session:
    """``handshake-lab play --json`` as a child with a stdin the test writes commands to."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    err_lines: list[str] = field(default_factory=list)
    _out: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _err: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _pumps: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, *args: str) -> Session:
        proc = subprocess.Popen(
            [*CLI, "play", "--json", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads in the child before exec
        )
        session = cls(proc)
        for stream, lines in ((proc.stdout, session._out), (proc.stderr, session._err)):
            pump = threading.Thread(target=_pump, args=(stream, lines), daemon=True)
            pump.start()
            session._pumps.append(pump)
        return session

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines))
        self.proc.stdin.flush()

    def wait_events(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            line = self._out.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"output ended after {len(self.events)} events"
            self.events.append(json.loads(line))

    def wait_stderr(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err_lines):
            line = self._err.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"stderr ended before {text!r}: {self.err_lines}"
            self.err_lines.append(line)

    def finish(self, timeout: float = 60) -> int:
        status = self.proc.wait(timeout=timeout)
        for lines, into in ((self._err, self.err_lines), (self._out, None)):
            while (line := lines.get(timeout=10)) is not None:
                if into is not None:
                    into.append(line)
                else:
                    self.events.append(json.loads(line))
        return status

    @property
    def ports(self) -> list[int]:
        return sorted(self.events[0]["ports"].values())

    def kill_now(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pump in self._pumps:
            pump.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _end_with(session: Session, sig: signal.Signals) -> None:
    os.killpg(session.proc.pid, sig)
    status = session.finish()
    assert status == ExitStatus.INTERRUPTED, (status, session.err_lines)
    text = "".join(session.err_lines)
    assert "Traceback" not in text
    assert "interrupted" in session.err_lines[-1] or "terminated" in session.err_lines[-1]
    assert session.events[-1]["event"] != "result"


def _at_prompt(topology: str, sig: signal.Signals) -> Session:
    session = Session.start("--topology", topology)
    try:
        session.wait_events(2)  # the header, then play's own listen: now at the prompt
        _end_with(session, sig)
    finally:
        session.kill_now()
    return session


def _mid_action(topology: str, sig: signal.Signals) -> Session:
    session = Session.start("--topology", topology)
    try:
        session.wait_events(2)
        session.send("connect", "wait 30")
        session.wait_events(3)  # connected
        session.wait_stderr("play> wait 30")  # the next step (30 s of watching) has begun
        _end_with(session, sig)
    finally:
        session.kill_now()
    return session


@pytest.mark.root
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
@pytest.mark.parametrize("when", [_at_prompt, _mid_action], ids=["prompt", "mid-action"])
def test_a_signal_ends_a_netns_session_leaving_nothing(when: Any, sig: signal.Signals) -> None:
    session = when("netns", sig)
    assert wait_clean(session.proc.pid, session.ports) == {}


@pytest.mark.parametrize("when", [_at_prompt, _mid_action], ids=["prompt", "mid-action"])
def test_ctrl_c_ends_a_loopback_session_leaving_no_listener(when: Any) -> None:
    session = when("loopback", signal.SIGINT)
    assert wait_clean(session.proc.pid, session.ports) == {}


def test_an_idle_session_ends_by_itself_and_cleanly() -> None:
    session = Session.start("--idle", "1")
    try:
        session.wait_events(2)
        status = session.finish(timeout=30)  # stdin stays open: only the idle timer ends it
    finally:
        session.kill_now()
    assert status == ExitStatus.OK, session.err_lines
    assert "play: no command for 1 s; ending the session\n" in session.err_lines
    assert session.events[-1]["event"] == "result"
    assert wait_clean(session.proc.pid, session.ports) == {}


def test_eof_ends_the_session_cleanly() -> None:
    session = Session.start()
    try:
        session.wait_events(2)
        session.send("connect")
        assert session.proc.stdin is not None
        session.proc.stdin.close()
        status = session.finish()
    finally:
        session.kill_now()
    assert status == ExitStatus.OK, session.err_lines
    assert [e["event"] for e in session.events] == ["lab", "step", "step", "result"]
    assert wait_clean(session.proc.pid, session.ports) == {}


# -- play --browser: the same ends, and the page's server closes with the session -------------

URL = re.compile(r"live view at (http://127\.0\.0\.1:(\d+)/[\w-]+/)")


def _browser_session(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Session, str, int]:
    """``play --json --browser`` (no browser opened: no display), its URL and port; a command
    POSTed as the page does (``connect``) has run."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    session = Session.start("--browser", *args)
    session.wait_stderr("live view at")
    found = next(m for line in session.err_lines if (m := URL.search(line)))
    url, port = found.group(1), int(found.group(2))
    session.wait_events(2)  # the header, play's own listen
    assert _post(f"{url}command", "connect") == 202
    session.wait_events(3)
    return session, url, port


def _post(url: str, body: str) -> int:
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("how", ["quit", "eof", "idle", "SIGINT", "SIGTERM"])
def test_a_browser_session_ends_every_way_closing_its_server(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, url, port = _browser_session(monkeypatch, *(["--idle", "2"] if how == "idle" else []))
    try:
        assert session.proc.stdin is not None
        if how == "quit":
            assert _post(f"{url}command", "quit") == 202
        elif how == "eof":
            session.proc.stdin.close()
        if how.startswith("SIG"):
            _end_with(session, signal.Signals[how])
        else:
            status = session.finish(timeout=30)  # idle: stdin stays open, only the timer ends it
            assert status == ExitStatus.OK, session.err_lines
            assert session.events[-1]["event"] == "result"
    finally:
        session.kill_now()
    assert _refused(port)  # the page's server is closed
    assert wait_clean(session.proc.pid, session.ports) == {}


@pytest.mark.root
def test_sigterm_ends_a_browser_netns_session_with_a_hold_leaving_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, url, port = _browser_session(monkeypatch, "--topology", "netns")
    try:
        assert _post(f"{url}command", "drop next fin from client") == 202
        session.wait_events(4)
        _end_with(session, signal.SIGTERM)
    finally:
        session.kill_now()
    assert _refused(port)
    assert wait_clean(session.proc.pid, session.ports) == {}
