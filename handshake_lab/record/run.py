"""A whole run as one record, and the views every renderer shares.

``RunRecord`` holds the events of one run in order. ``Recorder`` is an event sink that builds
it while the run goes (and passes each event on to a live renderer). ``conversations()`` groups
the run's captured segments by the conversation the engine assigned them to, with each end's
transitions beside them: the ladder is drawn from this, so it shows exactly the segments and
states the step tables list, nothing derived anew from packets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from handshake_lab.errors import ExitStatus
from handshake_lab.record.events import Event, LabResult, LabStarted, StepReport

End = Literal["client", "server"]
OWNER_SLACK_MS = 5.0
"""A traced transition this much before a conversation's first segment still belongs to it
(connect() is traced just before its SYN is captured); one seen in the table gets no slack."""


@dataclass(frozen=True, slots=True)
class LadderRow:
    """One captured segment of a conversation: when (ms since the run began), who sent it,
    and its label with relative numbers (``SYN seq=0``)."""

    t_ms: float
    sender: End
    label: str
    dropped: bool = False
    """A hold dropped it at the receiver (``"dropped": true`` in the record)."""
    forged: bool = False
    """The lab's raw socket sent it, not the sender's kernel (``"forged": true``)."""


@dataclass(frozen=True, slots=True)
class ConversationView:
    """One captured connection: its two endpoints, its segments and each end's transitions."""

    index: int
    client: str
    server: str
    rows: tuple[LadderRow, ...]
    states: tuple[tuple[float, End, str], ...]
    """(ms since the run began, which end, the state it entered), from the record. A state an
    end left at the instant it entered it is not listed (TIME_WAIT ended by the SYN that
    reopens the 4-tuple, recorded at the new socket's time): nothing stayed in it."""

    @property
    def self_connected(self) -> bool:
        """One socket connected to itself (a simultaneous open with a single socket)."""
        return self.client == self.server

    @property
    def start_ms(self) -> float:
        return self.rows[0].t_ms if self.rows else 0.0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run: the lab event, the step reports in order, the result (None if interrupted).

    ``lang`` is the language the texts were saved in, for a record read back from NDJSON;
    None for a record made live (its texts are in every language).
    """

    started: LabStarted
    steps: tuple[StepReport, ...] = ()
    result: LabResult | None = None
    lang: str | None = None

    def events(self) -> Iterator[Event]:
        yield self.started
        yield from self.steps
        if self.result is not None:
            yield self.result

    def exit_status(self) -> ExitStatus:
        """The run's verdict as the exit code ``run`` gave (and ``show`` gives) for it."""
        if self.result is None:
            return ExitStatus.INTERRUPTED
        if not self.result.passed:
            return ExitStatus.KERNEL_DISAGREED
        quiz = self.result.quiz
        if quiz is not None and quiz.get("correct", 0) < quiz.get("asked", 0):
            return ExitStatus.QUIZ_WRONG
        return ExitStatus.OK

    def segments(self) -> list[dict[str, Any]]:
        return [seg for step in self.steps for seg in step.segments]

    def transitions(self) -> list[dict[str, Any]]:
        return [tr for step in self.steps for tr in step.transitions]

    def retransmissions(self) -> frozenset[int]:
        """Indexes into ``segments()`` of the segments that repeat an earlier one: the same
        conversation, sender, sequence number, flags (PSH aside) and length, for a segment that
        occupies sequence space (SYN, FIN or data). Bare ACKs are never retransmitted, so a
        repeated ACK (answering a resent FIN) is not one."""
        seen: set[tuple[object, ...]] = set()
        found: set[int] = set()
        for index, seg in enumerate(self.segments()):
            flags = set(str(seg.get("flags", "")).split(",")) - {"PSH", ""}
            length = int(seg.get("len") or 0)
            if not flags & {"SYN", "FIN"} and length == 0:
                continue
            key = (seg.get("conv"), seg.get("sender"), seg.get("seq"), length, *sorted(flags))
            if key in seen:
                found.add(index)
            seen.add(key)
        return frozenset(found)

    def conversations(self) -> list[ConversationView]:
        """Every captured conversation of the run, in order of first appearance."""
        grouped: dict[int, list[dict[str, Any]]] = {}
        for seg in self.segments():
            conv = seg.get("conv")
            if isinstance(conv, int):
                grouped.setdefault(conv, []).append(seg)
        ends: dict[int, dict[tuple[str, str], End]] = {}
        for index, segs in grouped.items():
            first = segs[0]
            src, dst = str(first["src"]), str(first["dst"])
            client, server = (src, dst) if first["sender"] == "client" else (dst, src)
            ends[index] = {(server, client): "server", (client, server): "client"}
        states: dict[int, list[tuple[float, End, str]]] = {index: [] for index in grouped}
        for tr in self.transitions():
            if tr.get("old") == tr.get("new"):
                continue  # a socket handed to a timewait socket in the same state: no move
            key = (str(tr.get("local")), str(tr.get("remote")))
            # A 4-tuple reused by a later connection (a SYN into TIME_WAIT): a transition
            # belongs to the latest of its conversations that had begun by then.
            # A move seen in the table happened at or before it was seen: no slack for it (a
            # TIME_WAIT read a few ms before the reconnecting SYN is the old connection's).
            slack = 0.0 if tr.get("source") == "table" else OWNER_SLACK_MS
            owners = [i for i in sorted(grouped) if key in ends[i]]
            begun = [i for i in owners if grouped[i][0]["t_ms"] <= tr["t_ms"] + slack]
            owner = begun[-1] if begun else (owners[0] if owners else None)
            if owner is not None:
                states[owner].append((float(tr["t_ms"]), ends[owner][key], str(tr["new"])))
        views: list[ConversationView] = []
        for index in sorted(grouped):
            first = grouped[index][0]
            src, dst = str(first["src"]), str(first["dst"])
            client, server = (src, dst) if first["sender"] == "client" else (dst, src)
            views.append(
                ConversationView(
                    index=index,
                    client=client,
                    server=server,
                    rows=tuple(
                        LadderRow(
                            float(s["t_ms"]),
                            s["sender"],
                            str(s["label"]),
                            bool(s.get("dropped")),
                            bool(s.get("forged")),
                        )
                        for s in grouped[index]
                    ),
                    states=tuple(_lasting(states[index])),
                )
            )
        return views


def _lasting(states: list[tuple[float, End, str]]) -> list[tuple[float, End, str]]:
    """``states`` without those an end left at the instant it entered them."""
    return [
        (t, end, state)
        for i, (t, end, state) in enumerate(states)
        if not any(t2 == t and end2 == end for t2, end2, _ in states[i + 1 :])
    ]


@dataclass
class Recorder:
    """An event sink that keeps the run's record and passes each event on (``forward``)."""

    forward: Callable[[Event], None] | None = None
    started: LabStarted | None = None
    steps: list[StepReport] = field(default_factory=list)
    result: LabResult | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, LabStarted):
            self.started = event
        elif isinstance(event, StepReport):
            self.steps.append(event)
        else:
            self.result = event
        if self.forward is not None:
            self.forward(event)

    def record(self) -> RunRecord:
        if self.started is None:
            raise ValueError("no run has started")
        return RunRecord(self.started, tuple(self.steps), self.result)
