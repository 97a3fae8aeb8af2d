"""Where the events of a run or a play session go, the same for ``run`` and ``play``: the
terminal's tables (or ``--json`` lines), the ``--save`` file, a live page added later, and on a
terminal the progress line while a step waits (never in ``--json``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from handshake_lab.record.events import Event
from handshake_lab.record.run import RunRecord
from handshake_lab.render.jsonl import JsonLinesRenderer
from handshake_lab.render.progress import StepProgress
from handshake_lab.render.table import TableRenderer
from handshake_lab.render.text import make_console
from handshake_lab.spec.model import Step

Started = Callable[[Step, int, int], None]


class EventOutput:
    """The sinks of one run; use as a context manager (the progress line, the save file)."""

    def __init__(self, lang: str, json_out: bool, save: Path | None) -> None:
        self.renderer = None if json_out else TableRenderer(make_console(), lang)
        self.sinks: list[Callable[[Event], None]] = [self.renderer or JsonLinesRenderer(lang)]
        self.saved: TextIO | None = save.open("w", encoding="utf-8") if save else None
        if self.saved is not None:
            self.sinks.append(JsonLinesRenderer(lang, self.saved))
        # Only for a person at a terminal: not in --json, not when stderr is a file.
        tty = self.renderer is not None and sys.stderr.isatty()
        self.progress = StepProgress(sys.stderr, lang) if tty else None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> EventOutput:
        if self.progress is not None:
            self._stack.enter_context(self.progress)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.saved is not None:
            self.saved.close()

    def add(self, sink: Callable[[Event], None]) -> None:
        self.sinks.append(sink)

    def emit(self, event: Event) -> None:
        if self.progress is not None:
            self.progress.clear()
        for sink in self.sinks:
            sink(event)

    @property
    def started(self) -> Started | None:
        """The engine's hook as each step begins: the progress line's start, or None."""
        progress = self.progress
        if progress is None:
            return None

        def started(step: Step, position: int, total: int) -> None:
            progress.started(position, total, step.actor, step.action, step.timeout, step.stay)

        return started

    def ladders(self, record: RunRecord) -> None:
        """After the run: the ladder of each conversation, on the terminal only."""
        if self.renderer is not None:
            self.renderer.ladders(record)
