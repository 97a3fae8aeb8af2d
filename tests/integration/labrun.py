"""Helpers to run a lab in-process and keep every event, for integration tests."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

from rich.cells import cell_len

from handshake_lab.lab.grading import audit
from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.base import Observer
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.record.codec import dumps, read_events
from handshake_lab.record.events import Event, LabResult, LabStarted, StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.render.table import TableRenderer
from handshake_lab.render.text import make_console
from handshake_lab.spec.model import Lab
from tests.schema_check import assert_valid_record_event


@dataclass
class Recorded:
    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        assert_valid_record_event(event)  # every event a test records follows the schema
        self.events.append(event)

    @property
    def header(self) -> LabStarted:
        first = self.events[0]
        assert isinstance(first, LabStarted)
        return first

    @property
    def steps(self) -> dict[str, StepReport]:
        return {e.id: e for e in self.events if isinstance(e, StepReport)}

    def record(self) -> RunRecord:
        return RunRecord(self.header, tuple(self.steps.values()), self.result)

    def audit(self) -> list[str]:
        """What ``grade`` would hold against this run's saved record (empty: consistent)."""
        return audit(read_events(dumps(event, "en") for event in self.events), None)

    @property
    def result(self) -> LabResult:
        last = self.events[-1]
        assert isinstance(last, LabResult)
        return last


def run_lab(
    lab: Lab,
    loop: str = "asyncio",
    observers: list[Observer] | None = None,
    port: int | None = None,
) -> Recorded:
    recorded = Recorded()
    runner = LabRun(
        lab,
        # A lab of both families (ip = "dual") connects to ::1 as well as to 127.0.0.1.
        RunOptions(loop=loop, port=port, host6="::1" if lab.dual else None),
        observers if observers is not None else [SsObserver(), PsutilObserver()],
        recorded,
    )
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        r.run(runner.run())
    return recorded


def terminal_text(record: RunRecord, lang: str, width: int) -> list[str]:
    """The lines ``run`` or ``show`` prints for ``record`` on a ``width``-column terminal."""
    stream = io.StringIO()
    TableRenderer(make_console(stream=stream, width=width), lang).render(record)
    return stream.getvalue().splitlines()


def assert_fits_the_terminal(record: RunRecord, explanations: list[str]) -> None:
    """At 80 columns, in English and Chinese, no line is wider than 80 display columns and
    none ends with a space; at 120 the explanations use more than 80 (they are not wrapped
    for 80 whatever the terminal). ``explanations``: the English texts the run shows."""
    for lang in ("en", "zh"):
        lines = terminal_text(record, lang, 80)
        assert lines, lang
        too_wide = [line for line in lines if cell_len(line) > 80]
        assert not too_wide, (lang, too_wide[:3])
        trailing = [line for line in lines if line != line.rstrip()]
        assert not trailing, (lang, trailing[:3])
    wide = terminal_text(record, "en", 120)
    assert all(cell_len(line) <= 120 for line in wide)
    longest = max(len(" ".join(text.split())) for text in explanations)
    if longest > 100:  # a text that fills more than one 80-column line
        assert max(cell_len(line) for line in wide) > 80
