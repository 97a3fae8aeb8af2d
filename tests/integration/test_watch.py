"""``watch`` on real loopback sockets, as a separate process, as a user would run it.

The command is started through ``watch_command`` in a ``python -c`` child (the Typer command
is registered elsewhere), with ``count`` as a bound so a failed test cannot leave it running.
Every wait is a bounded poll on the child's output.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.cli.watch_cmd import WatchUsageError, watch_command
from handshake_lab.errors import ExitStatus, HandshakeLabError
from tests.schema_check import assert_valid_event

ROOT = Path(__file__).resolve().parents[2]
RUNNER = (
    "import json, sys\n"
    "from handshake_lab.cli.watch_cmd import watch_command\n"
    "sys.exit(int(watch_command(**json.loads(sys.argv[1]))))\n"
)
TIMEOUT = 15.0
ESCAPE = "\x1b"
PLAIN_LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3} \S+ > \S+ "
    r"(?:[A-Z_0-9]+ \(at start\)"
    r"|[A-Z_0-9]+ -> [A-Z_0-9]+(?: \(in [A-Z_0-9]+ (?:>=)?\d+\.\d{3} s\))?)"
    r"(?: \[pid \d+(?: \S+)?\])?$"
)


def child_env() -> dict[str, str]:
    """The user's environment minus anything that would force rich to act as a terminal."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def watch_args(
    port: int | None = None,
    *,
    pid: int | None = None,
    state: str | None = None,
    once: bool = False,
    json_out: bool = True,
    interval: float = 0.05,
    count: int | None = 600,
) -> str:
    return json.dumps(
        {
            "port": port,
            "pid": pid,
            "state": state,
            "once": once,
            "json_out": json_out,
            "interval": interval,
            "count": count,
        }
    )


class Lines:
    """A child's stdout, read line by line in a thread; ``wait`` polls with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait(self, predicate: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        for old in self.seen:
            if predicate(old):
                return old
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                break
            line = item
            if line.startswith("{"):  # watch --json: every line follows the schema
                assert_valid_event(json.loads(line), "watch --json")
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout} s; got:\n" + "\n".join(self.seen))

    def rest(self, timeout: float = TIMEOUT) -> list[str]:
        """Every line until the stream ends (the child exited)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                if line.startswith("{"):
                    assert_valid_event(json.loads(line), "watch --json")
                self.seen.append(line)
        return self.seen


class Events:
    """NDJSON events of a streaming watch, replayed into a state per socket."""

    def __init__(self, lines: Lines) -> None:
        self.lines = lines
        self.states: dict[tuple[str, str | None], str] = {}
        self.history: list[dict[str, Any]] = []
        self._done = 0

    def _replay(self) -> None:
        for line in self.lines.seen[self._done :]:
            event = json.loads(line)
            assert_valid_event(event, "watch --json")
            if event["event"] == "transition":
                self.history.append(event)
                key = (event["local"], event["remote"])
                if event["new"] == "ABSENT":
                    self.states.pop(key, None)
                else:
                    self.states[key] = event["new"]
        self._done = len(self.lines.seen)

    def wait(self, what: str, check: Callable[[Events], bool]) -> None:
        def ready(_: str) -> bool:
            self._replay()
            return check(self)

        try:
            self.lines.wait(ready)
        except AssertionError as error:
            raise AssertionError(f"waiting for {what}: {error}") from None

    def transitions(self, local: str, remote: str | None) -> list[tuple[str, str]]:
        self._replay()
        return [
            (e["old"], e["new"])
            for e in self.history
            if (e["local"], e["remote"]) == (local, remote)
        ]


def _default_sigint() -> None:
    # A shell's "cmd &" (a backgrounded `make test`) starts children with SIGINT ignored, and
    # Python then keeps it ignored (as it should). These tests press Ctrl-C: give the watch what
    # a user at a terminal has, the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []

    def start(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            args,
            stdout=kwargs.pop("stdout", subprocess.PIPE),
            stderr=kwargs.pop("stderr", subprocess.PIPE),
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=kwargs.pop("env", None) or child_env(),
            preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads in the child before exec
            **kwargs,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(TIMEOUT)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def start_watch(
    spawn: Callable[..., subprocess.Popen[str]], arguments: str
) -> tuple[subprocess.Popen[str], Lines]:
    child = spawn([sys.executable, "-c", RUNNER, arguments])
    assert child.stdout is not None
    return child, Lines(child.stdout)


def listener() -> socket.socket:
    """A listener on a port no other socket of this machine uses (as local or remote port).

    ``bind(port 0)`` may hand out a port that a TIME_WAIT left by an earlier test still has as
    its local port; ``watch --port`` would rightly show that socket too. Rejected candidates
    stay open until a clean port is found, so the kernel does not offer them again.
    """
    from handshake_lab.observe.netlink import NetlinkObserver  # noqa: PLC0415

    rejected: list[socket.socket] = []
    try:
        with NetlinkObserver() as table:
            for _ in range(50):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
                sock.bind(("127.0.0.1", 0))
                sock.listen()
                if len(table.snapshot([sock.getsockname()[1]])) == 1:
                    return sock
                rejected.append(sock)
        raise AssertionError("no port free of other sockets after 50 tries")
    finally:
        for sock in rejected:
            sock.close()


def name(sock: socket.socket, peer: bool = False) -> str:
    host, port = sock.getpeername() if peer else sock.getsockname()
    return f"{host}:{port}"


def test_json_watch_follows_a_connection_through_active_close(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    with listener() as server:
        port = server.getsockname()[1]
        child, lines = start_watch(spawn, watch_args(port))
        first = json.loads(lines.wait(lambda _: True))
        assert first["event"] == "watch"
        assert first["ports"] == [port]
        events = Events(lines)
        events.wait("the listener", lambda e: e.states.get((name(server), None)) == "LISTEN")

        client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        accepted, _ = server.accept()
        with accepted:
            client_end = (name(client), name(client, peer=True))
            server_end = (name(accepted), name(accepted, peer=True))
            events.wait(
                "both ends ESTABLISHED",
                lambda e: e.states.get(client_end) == e.states.get(server_end) == "ESTABLISHED",
            )
            client.close()  # active close: FIN from the client
            events.wait(
                "FIN_WAIT2 and CLOSE_WAIT",
                lambda e: (
                    e.states.get(client_end) == "FIN_WAIT2"
                    and e.states.get(server_end) == "CLOSE_WAIT"
                ),
            )
        # The server closes too: the client end waits in TIME_WAIT, the server end goes.
        events.wait(
            "TIME_WAIT, server end gone",
            lambda e: e.states.get(client_end) == "TIME_WAIT" and server_end not in e.states,
        )
    # Every change names the state it left and how long it stayed there.
    client_moves = events.transitions(*client_end)
    assert client_moves[0][0] == "ABSENT"
    assert client_moves[-1] == ("FIN_WAIT2", "TIME_WAIT")
    assert ("ESTABLISHED", "CLOSE_WAIT") in events.transitions(*server_end)
    for event in events.history:
        if event["kind"] != "appeared":
            assert event["in_old_s"] >= 0
    # SIGTERM ends the watch cleanly: a summary line, exit 0, nothing on stderr but notes.
    child.send_signal(signal.SIGTERM)
    assert child.wait(TIMEOUT) == 0
    summary = json.loads(lines.rest()[-1])
    assert summary["event"] == "summary"
    assert summary["refreshes"] >= 3
    assert child.stderr is not None
    assert "Traceback" not in child.stderr.read()


def test_once_prints_the_sockets_of_a_port_and_exits(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    with listener() as server:
        port = server.getsockname()[1]
        child, lines = start_watch(spawn, watch_args(port, once=True, json_out=False))
        assert child.wait(TIMEOUT) == 0
        output = lines.rest()
    text = "\n".join(output)
    assert ESCAPE not in text
    assert output[0].startswith(f"watch port {port}: 1 socket")
    assert output[1] == "LISTEN 1"
    assert any(line.startswith(f"127.0.0.1:{port} ") and "LISTEN" in line for line in output)
    assert all(len(line) <= 80 for line in output)


def test_plain_lines_without_a_terminal_and_ctrl_c_exits_cleanly(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    with listener() as server:
        port = server.getsockname()[1]
        child, lines = start_watch(spawn, watch_args(port, json_out=False))
        lines.wait(lambda line: "LISTEN (at start)" in line)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            accepted, _ = server.accept()
            accepted.close()  # passive side for the client: CLOSE_WAIT
            lines.wait(lambda line: f"{name(client)} > " in line and "-> CLOSE_WAIT" in line)
        lines.wait(lambda line: "-> LAST_ACK" in line or "-> ABSENT" in line)
        child.send_signal(signal.SIGINT)
        assert child.wait(TIMEOUT) == 0
    output = lines.rest()
    assert output
    for line in output:
        assert ESCAPE not in line
        assert PLAIN_LINE.match(line), line
    assert child.stderr is not None
    stderr = child.stderr.read()
    assert "Traceback" not in stderr
    assert ESCAPE not in stderr


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_hangup_and_quit_end_the_watch_like_sigterm(
    spawn: Callable[..., subprocess.Popen[str]], sig: signal.Signals
) -> None:
    """A closed terminal (SIGHUP) or Ctrl-\\ (SIGQUIT): the summary line and exit 0, as for
    SIGTERM, not a kill without one (129, 131)."""
    with listener() as server:
        port = server.getsockname()[1]
        child, lines = start_watch(spawn, watch_args(port))
        events = Events(lines)
        events.wait("the listener", lambda e: e.states.get((name(server), None)) == "LISTEN")
        child.send_signal(sig)
        assert child.wait(TIMEOUT) == 0
    summary = json.loads(lines.rest()[-1])
    assert summary["event"] == "summary"
    assert child.stderr is not None
    assert "Traceback" not in child.stderr.read()


def http_server(spawn: Callable[..., subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], int]:
    """``python3 -m http.server`` on a free port: a program this suite did not write."""
    server = spawn(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        stderr=subprocess.DEVNULL,
    )
    assert server.stdout is not None
    banner = Lines(server.stdout).wait(lambda line: "Serving HTTP" in line)
    match = re.search(r" port (\d+)", banner)
    assert match is not None, banner
    return server, int(match.group(1))


def test_watch_sees_a_foreign_server_with_its_owner_pid(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    server, port = http_server(spawn)
    child, lines = start_watch(spawn, watch_args(port, once=True))
    assert child.wait(TIMEOUT) == 0
    objects = [json.loads(line) for line in lines.rest()]
    assert [o["event"] for o in objects] == ["watch", "socket", "summary"]
    sock = objects[1]
    assert sock["state"] == "LISTEN"
    assert sock["local"] == f"127.0.0.1:{port}"
    assert sock["pid"] == server.pid
    assert sock["process"]  # "python3" or whatever the interpreter's comm is

    # Streaming, with --pid: a client holds a connection open, then asks for a page; the
    # server (HTTP/1.0) closes first, and its end stays attributed to it after close().
    child, lines = start_watch(spawn, watch_args(pid=server.pid))
    events = Events(lines)
    events.wait("the listener", lambda e: e.states.get((f"127.0.0.1:{port}", None)) == "LISTEN")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        server_end = (name(client, peer=True), name(client))
        events.wait("the server's end", lambda e: e.states.get(server_end) == "ESTABLISHED")
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while client.recv(65536):
            pass  # until the server's FIN
    events.wait("the server's end in TIME_WAIT", lambda e: e.states.get(server_end) == "TIME_WAIT")
    moves = [ev for ev in events.history if (ev["local"], ev["remote"]) == server_end]
    assert all(ev["pid"] == server.pid for ev in moves)
    assert moves[0]["process"]
    child.send_signal(signal.SIGTERM)
    assert child.wait(TIMEOUT) == 0


def test_live_view_on_a_terminal_redraws_and_ctrl_c_restores_it(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    main, secondary = pty.openpty()
    with listener() as server:
        port = server.getsockname()[1]
        child = spawn(
            [sys.executable, "-c", RUNNER, watch_args(port, json_out=False)],
            stdout=secondary,
            stderr=secondary,
            # The pty is a terminal of the type we say: the caller's TERM may be "dumb" (an
            # editor's shell, a bare machine's console), which rich never redraws.
            env=child_env() | {"TERM": "xterm-256color"},
        )
        os.close(secondary)
        screen = ""
        deadline = time.monotonic() + TIMEOUT
        try:
            while f"127.0.0.1:{port}" not in screen or "LISTEN" not in screen:
                assert time.monotonic() < deadline, f"no live table; screen so far: {screen!r}"
                try:
                    screen += os.read(main, 65536).decode(errors="replace")
                except OSError:
                    break
            assert ESCAPE in screen  # a terminal gets the live (redrawn) view
            assert "Ctrl-C to stop" in screen
            child.send_signal(signal.SIGINT)
            assert child.wait(TIMEOUT) == 0
        finally:
            os.close(main)


def test_unknown_state_is_a_usage_error_naming_the_state() -> None:
    with pytest.raises(WatchUsageError, match="unknown TCP state 'FIN_WAIT_3'") as caught:
        watch_command(None, None, "FIN_WAIT_3", True, True, 0.5, None)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, HandshakeLabError)
    assert caught.value.exit_status is ExitStatus.USAGE


def test_pid_that_does_not_exist_is_a_usage_error() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait(TIMEOUT)
    with pytest.raises(WatchUsageError, match=f"no process with pid {gone.pid}"):
        watch_command(None, gone.pid, None, True, True, 0.5, None)


@pytest.mark.parametrize(
    ("spelling", "linux"),
    [
        ("ESTAB", "ESTABLISHED"),
        ("fin-wait-2", "FIN_WAIT2"),
        ("TIME-WAIT", "TIME_WAIT"),
        ("SYN-RECEIVED", "SYN_RECV"),
    ],
)
def test_state_filter_accepts_ss_and_rfc_spellings(
    spelling: str, linux: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert watch_command(None, None, spelling, True, True, 0.5, None) is ExitStatus.OK
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["event"] == "watch"
    assert first["state"] == linux  # each spelling to its own state, not just to some state


def test_in_process_watch_stops_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    result: list[ExitStatus] = []
    with listener() as server:
        port = server.getsockname()[1]
        worker = threading.Thread(
            target=lambda: result.append(
                watch_command(port, None, None, False, True, 0.05, None, stop=stop)
            )
        )
        worker.start()
        stop.set()
        worker.join(TIMEOUT)
    assert result == [ExitStatus.OK]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["event"] == "summary"
