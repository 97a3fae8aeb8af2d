"""SIGTERM, SIGHUP and SIGQUIT handled like Ctrl-C, for every long-running command.

A closed terminal sends SIGHUP, Ctrl-\\ sends SIGQUIT, ``kill`` sends SIGTERM: each means "stop
now", and each must run the same cleanup as Ctrl-C (sockets, namespaces, the registry file,
the trace instance). Left at their defaults, SIGHUP and SIGQUIT killed the process with none of
that (issue 18), so every command that owns something handles ``TERMINATING`` as a whole.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from handshake_lab.errors import Interrupted

TERMINATING: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
"""Signals that end a command like Ctrl-C does (SIGINT has Python's own handler)."""


def raise_if_interrupted(returncode: int, what: str) -> None:
    """A child (``ss``, ``nft``, ``ip``) shares the terminal's process group, so Ctrl-C, Ctrl-\\
    or a closed terminal ends it too, and the command may learn of it from the child before
    its own handler runs. A child killed by one of those signals is an interruption
    (``Interrupted``, exit 130), not a failure of the tool it ran."""
    if returncode < 0 and -returncode in (signal.SIGINT, *TERMINATING):
        name = signal.Signals(-returncode).name
        raise Interrupted(f"interrupted ({name} while {what} ran); every socket was closed")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the body runs, each of ``TERMINATING`` raises KeyboardInterrupt, so the same
    ``finally`` blocks (socket release, topology teardown) run as for Ctrl-C. Inside an event
    loop the command's own handler takes over. Only the main thread may set handlers;
    elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler) for signum in TERMINATING}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
