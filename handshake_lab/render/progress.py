"""A progress line on stderr while a step waits for the kernel (SYN retransmissions, a state
that must hold, a TIME_WAIT being watched): only on a terminal, never in ``--json``.

    Step 4/9 client: connect: waiting for the kernel 2.3 s (timeout 4 s)

A step that settles quickly shows nothing: the line appears once a step has run
``SHOW_AFTER`` seconds and is redrawn every ``TICK`` seconds with a carriage return; it is
erased (carriage return, erase to the end of the line) before anything else is printed, so
the run's output is the same with or without it. A thread draws it: the event loop that
drives the sockets never waits for the terminal.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from rich.cells import cell_len

from handshake_lab.i18n.labels import label
from handshake_lab.render.text import output_width

__all__ = ["SHOW_AFTER", "TICK", "StepProgress", "fit"]

SHOW_AFTER = 0.5
"""Seconds a step runs before its line appears: most steps settle in milliseconds."""
TICK = 0.1
"""Seconds between redraws."""
ERASE = "\r\x1b[K"


@dataclass(frozen=True, slots=True)
class _Waiting:
    text: str
    timeout: float
    stay: float
    since: float


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width - 1`` display columns: a line that wrapped could not be
    redrawn in place with a carriage return."""
    out, used = "", 0
    for char in text:
        used += cell_len(char)
        if used > width - 1:
            break
        out += char
    return out


class StepProgress:
    """Call ``started`` as a step begins and ``clear`` before printing anything; use as a
    context manager around the run (the thread stops and the line is erased on exit)."""

    def __init__(self, stream: TextIO, lang: str) -> None:
        self.stream = stream
        self.lang = lang
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: _Waiting | None = None
        self._shown = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StepProgress:
        self._thread = threading.Thread(target=self._draw, name="hslab-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        with self._lock:
            self._closed = True
            self._erase()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    def started(
        self, index: int, total: int, actor: str, action: str, timeout: float, stay: float = 0.0
    ) -> None:
        """Step ``index`` of ``total`` began."""
        text = f"{label('step', self.lang)} {index}/{total} {actor}: {action}"
        with self._lock:
            self._erase()
            self._waiting = _Waiting(text, timeout, stay, time.monotonic())
            self._wake.notify()

    def clear(self) -> None:
        """The step is over (or something is about to be printed): erase the line."""
        with self._lock:
            self._waiting = None
            self._erase()

    def _line(self, waiting: _Waiting, now: float) -> str:
        bound = f"{label('timeout', self.lang)} {waiting.timeout:g} s"
        if waiting.stay:
            bound = f"{label('must_hold', self.lang)} {waiting.stay:g} s, {bound}"
        elapsed = now - waiting.since
        return f"{waiting.text}: {label('waiting', self.lang)} {elapsed:.1f} s ({bound})"

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(ERASE)
            self.stream.flush()
            self._shown = False

    def _width(self) -> int:
        return output_width(self.stream)  # COLUMNS, or the terminal's, read at each redraw

    def _draw(self) -> None:
        with self._lock:
            while not self._closed:
                waiting = self._waiting
                now = time.monotonic()
                if waiting is None:
                    self._wake.wait()
                    continue
                if now - waiting.since < SHOW_AFTER:
                    self._wake.wait(waiting.since + SHOW_AFTER - now)
                    continue
                self.stream.write("\r" + fit(self._line(waiting, now), self._width()) + "\x1b[K")
                self.stream.flush()
                self._shown = True
                self._wake.wait(TICK)
