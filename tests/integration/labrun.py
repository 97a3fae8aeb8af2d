"""Helpers to run a lab in-process and keep every event, for integration tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from handshake_lab.lab.grading import audit
from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.base import Observer
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.record.codec import dumps, read_events
from handshake_lab.record.events import Event, LabResult, LabStarted, StepReport
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
        RunOptions(loop=loop, port=port),
        observers if observers is not None else [SsObserver(), PsutilObserver()],
        recorded,
    )
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        r.run(runner.run())
    return recorded
