"""The ``watch`` command's one function: check the options, pick a renderer, run the loop.

``watch_command`` raises ``WatchUsageError`` for a bad option value (an unknown state, a pid
that is not running, a non-positive interval or count). It is a ``ValueError`` and a
``HandshakeLabError`` with exit status USAGE (2), so ``guarded()`` prints it as one line and
exits 2 without any extra mapping. Ctrl-C and SIGTERM end the watch normally: the display is
closed, ``--json`` writes its ``summary`` line, and the status is OK (watching until
interrupted is the normal use). A closed stdout (``watch --json | head -3``) ends it quietly.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import nullcontext, suppress

from handshake_lab.errors import ExitStatus, HandshakeLabError
from handshake_lab.render.text import make_console
from handshake_lab.render.watch import (
    JsonWatchRenderer,
    LiveWatchRenderer,
    PlainWatchRenderer,
    describe_filter,
    print_once,
)
from handshake_lab.signals import sigterm_as_interrupt
from handshake_lab.tcp.states import TcpState
from handshake_lab.tcp.states import parse_state as parse_any_state
from handshake_lab.watch import (
    Refresh,
    Sink,
    Watcher,
    WatchFilter,
    process_exists,
    run_watch,
)


class WatchUsageError(HandshakeLabError, ValueError):
    """A ``watch`` option has a value that cannot work (exit status 2, like Click's)."""

    exit_status = ExitStatus.USAGE


def parse_state(word: str) -> TcpState:
    """Linux (``FIN_WAIT2``), ss (``FIN-WAIT-2``, ``ESTAB``) or RFC (``CLOSED``) spelling."""
    state = parse_any_state(word)
    if state is None:
        names = ", ".join(s.name for s in TcpState if s is not TcpState.NEW_SYN_RECV)
        raise WatchUsageError(f"unknown TCP state {word!r}; use one of {names}")
    if state is TcpState.NEW_SYN_RECV:
        return TcpState.SYN_RECV  # the kernel reports request sockets as SYN_RECV
    return state


def make_filter(port: int | None, pid: int | None, state: str | None) -> WatchFilter:
    """Validate the options into a ``WatchFilter``; ``WatchUsageError`` if one is wrong."""
    if port is not None and not 1 <= port <= 65535:
        raise WatchUsageError(f"port {port} out of range 1..65535")
    if pid is not None and not process_exists(pid):
        raise WatchUsageError(f"no process with pid {pid}")
    return WatchFilter(
        ports=None if port is None else frozenset({port}),
        pid=pid,
        state=None if state is None else parse_state(state),
    )


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def watch_command(
    port: int | None,
    pid: int | None,
    state: str | None,
    once: bool,
    json_out: bool,
    interval: float,
    count: int | None,
    *,
    stop: threading.Event | None = None,
) -> ExitStatus:
    """Watch the TCP sockets matching ``port``/``pid``/``state`` until Ctrl-C or ``count``.

    ``once`` prints one snapshot and returns. ``stop`` (for embedding and tests) ends the loop
    from another thread. Raises ``WatchUsageError`` (a ``ValueError``; exit status 2) for bad
    option values and ``ObserverError`` (exit status 6) if the socket table cannot be read.
    """
    if not interval > 0:
        raise WatchUsageError(f"--interval must be more than 0 seconds, not {interval:g}")
    if count is not None and count < 1:
        raise WatchUsageError(f"--count must be at least 1, not {count}")
    watch_filter = make_filter(port, pid, state)
    watcher = Watcher(watch_filter)
    description = f"watch {describe_filter(watch_filter)}"
    try:
        with sigterm_as_interrupt():
            if once:
                refresh = watcher.refresh()
                _note(watcher)
                if json_out:
                    renderer = JsonWatchRenderer(sys.stdout)
                    renderer.started(watch_filter, refresh.observer, None)
                    renderer.sockets(refresh)
                    renderer.summary()
                else:
                    print_once(make_console(), refresh, description)
                return ExitStatus.OK
            if json_out:
                json_renderer = JsonWatchRenderer(sys.stdout)
                json_renderer.started(watch_filter, watcher.observer_name, interval)
                with suppress(KeyboardInterrupt):
                    sink = _noting(watcher, json_renderer)
                    run_watch(watcher, sink, interval=interval, count=count, stop=stop)
                json_renderer.summary()
                return ExitStatus.OK
            console = make_console()
            if console.is_terminal:
                live = LiveWatchRenderer(console, description, interval)
                display = live
                sink = _noting(watcher, live)
            else:
                plain = PlainWatchRenderer(sys.stdout)
                display = None
                sink = _noting(watcher, plain)
                sys.stderr.write(
                    f"handshake-lab: {description} every {interval:g} s; Ctrl-C to stop\n"
                )
            shown = display if display is not None else nullcontext()
            with shown, suppress(KeyboardInterrupt):
                run_watch(watcher, sink, interval=interval, count=count, stop=stop)
            return ExitStatus.OK
    except BrokenPipeError:
        _quiet_stdout()
        return ExitStatus.OK
    finally:
        watcher.close()


def _note(watcher: Watcher) -> None:
    if watcher.note is not None:
        sys.stderr.write(f"handshake-lab: {watcher.note}\n")
        watcher.note = None


def _noting(watcher: Watcher, sink: Sink) -> Sink:
    """``sink``, printing the watcher's fallback note (stderr) first when there is one."""

    def call(refresh: Refresh) -> None:
        _note(watcher)
        sink(refresh)

    return call


__all__ = ["WatchUsageError", "make_filter", "parse_state", "watch_command"]
