"""Run a ``play`` session in-process from a list of command lines, keeping every event."""

from __future__ import annotations

from dataclasses import dataclass, field

from handshake_lab.lab.play import PlayRequest, play
from handshake_lab.lab.session import RunRequest, execute
from handshake_lab.placement import Topology
from handshake_lab.record.events import Event, StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.spec.model import Lab

HALF_CLOSE = [
    "connect",
    "send client hello",
    "shutdown client",
    "recv server",
    "recv server",
    "send server data after FIN",
    "recv client",
    "close server",
    "close client",
]
"""The half-close lab's lesson, typed by hand (after play's own opening ``listen``)."""


@dataclass
class Session:
    events: list[Event] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    record: RunRecord | None = None

    @property
    def steps(self) -> list[StepReport]:
        return [e for e in self.events if isinstance(e, StepReport)]

    def step_for(self, line: str, nth: int = 0) -> StepReport:
        """The report of the ``nth`` step whose id is the command's verb (``3-shutdown``)."""
        verb = line.split(maxsplit=1)[0]
        found = [s for s in self.steps if s.id.split("-", 1)[1] == verb]
        return found[nth]


def play_lines(
    lines: list[str], loop: str = "asyncio", topology: Topology = Topology.LOOPBACK
) -> Session:
    session = Session()
    pending = list(lines)

    async def read_line() -> str | None:
        return pending.pop(0) if pending else None

    request = PlayRequest(topology=topology, loop=loop, idle=60)
    session.record = play(request, session.events.append, read_line, session.said.append)
    return session


def rerun(lab: Lab, loop: str, topology: Topology) -> RunRecord:
    events: list[Event] = []
    return execute(RunRequest(lab=lab, topology=topology, loop=loop), events.append)


def states(report: StepReport) -> dict[str, str]:
    """Each side's state, where ss and psutil agreed on it."""
    return {side: obs.state for side, obs in report.observed.items() if obs.agree}
