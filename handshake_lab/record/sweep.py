"""What one run says about time: each socket's states, how long each lasted, and how long the
kernel waited for the answer that ended it. ``sweep`` puts these side by side per RTT.

Read from the run record only (the transitions the kernel reported, the captured segments, the
``tcp_info`` figures), never re-derived from packets or clocks of our own:

- a **span** is a side's stay in one state: from the transition that entered it to the one
  that left it (``duration_ms``; None when the run ended with the socket still in it);
- ``answer_ms`` is the honest RTT figure. A lab holds states still (an nft drop, a full accept
  queue), so a raw duration includes the hold: the client's SYN_SENT in the handshake lab lasts
  a whole SYN retransmission timeout before its second SYN gets through. ``answer_ms`` is the
  time from the last segment the side sent before leaving the state (the SYN that was
  answered) to the transition the answer caused: one RTT, hold or no hold. It is given only
  for a transition a received segment caused, and that segment a first answer, not a resent
  one (when a hold dropped the first answer and the peer resent it on its own timer, the wait
  would include that timer: the handshake lab's held client waits seconds for its SYN-ACK); and
  only for a socket whose segments the capture sees as they leave it (on loopback every
  socket; in namespaces the client's, captured on its own veth; a server's segments are
  captured when they reach the client);
- ``measured`` is the kernel's own view of each side: the first ``tcp_info`` of the run with an
  RTT sample (``rtt_ms`` = srtt, ``rttvar_ms``, ``rto_ms``), as ``ss -i`` would print it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handshake_lab.record.run import RunRecord

GONE = frozenset({"ABSENT", "CLOSE"})
SENT_SLACK_MS = 5.0
"""A segment this much before the state's entry still counts as sent in it (connect() is
traced just before its SYN is captured)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One side's stay in one state."""

    side: str
    state: str
    entered_ms: float
    left_ms: float | None
    next_state: str | None
    cause: str | None
    """What ended it: the flags of the received segment, ``application call``, or None."""
    answer_ms: float | None

    @property
    def duration_ms(self) -> float | None:
        return None if self.left_ms is None else round(self.left_ms - self.entered_ms, 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "state": self.state,
            "entered_ms": self.entered_ms,
            "left_ms": self.left_ms,
            "duration_ms": self.duration_ms,
            "next": self.next_state,
            "cause": self.cause,
            "answer_ms": self.answer_ms,
        }


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One run of a sweep: the wire it had, its verdict, its spans and the kernel's figures."""

    lab: str
    topology: str
    rtt_ms: float
    loss_pct: float
    passed: bool | None
    spans: tuple[Span, ...]
    measured: dict[str, dict[str, float]] = field(default_factory=dict)
    traced: bool = True
    """Whether the run had the transition stream. Without it (not root) every transition is
    the table read that first showed it: entered/left are up to one poll late, and there is
    no cause, so no ``answer_ms``."""

    def span(self, side: str, state: str) -> Span | None:
        """The side's first stay in ``state``."""
        return next((s for s in self.spans if s.side == side and s.state == state), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "delay_ms": self.rtt_ms,
            "loss_pct": self.loss_pct,
            "passed": self.passed,
            "measured": self.measured,
            "traced": self.traced,
            "states": [s.as_dict() for s in self.spans],
        }


def _host(address: object) -> str:
    text = str(address)
    return text.rpartition(":")[0].strip("[]")


def sweep_point(record: RunRecord) -> SweepPoint:
    """The spans and figures of one run (see the module docstring)."""
    started = record.started
    every_socket = started.topology == "loopback"
    resent = record.retransmissions()
    segments = sorted(
        ({**seg, "resent": i in resent} for i, seg in enumerate(record.segments())),
        key=lambda s: float(s["t_ms"]),
    )
    by_side: dict[str, list[dict[str, Any]]] = {}
    for tr in record.transitions():
        if tr.get("old") == tr.get("new"):
            continue
        by_side.setdefault(str(tr["side"]), []).append(tr)
    spans: list[Span] = []
    for side, moves in by_side.items():
        moves.sort(key=lambda t: float(t["t_ms"]))
        for here, after in zip(moves, [*moves[1:], None], strict=True):
            state = str(here["new"])
            if state in GONE:
                continue
            entered = float(here["t_ms"])
            answer = None
            if after is not None:
                answered = every_socket or _host(after.get("local")) != started.host.strip("[]")
                answer = _answer_ms(after, entered, segments) if answered else None
            spans.append(
                Span(
                    side=side,
                    state=state,
                    entered_ms=entered,
                    left_ms=None if after is None else float(after["t_ms"]),
                    next_state=None if after is None else str(after["new"]),
                    cause=None if after is None else after.get("cause"),
                    answer_ms=answer,
                )
            )
    spans.sort(key=lambda s: (s.entered_ms, s.side))
    measured: dict[str, dict[str, float]] = {}
    for step in record.steps:
        for side, info in step.tcp_info.items():
            if side not in measured and float(info.get("rtt_ms", 0)) > 0:
                measured[side] = dict(info)
    return SweepPoint(
        lab=started.name,
        topology=started.topology,
        rtt_ms=float(started.link.get("rtt_ms", 0.0)),
        loss_pct=float(started.link.get("loss_pct", 0.0)),
        passed=None if record.result is None else record.result.passed,
        spans=tuple(spans),
        measured=measured,
        traced=any(tr.get("source") == "trace" for tr in record.transitions()),
    )


def _answer_ms(
    leaving: dict[str, Any], entered: float, segments: list[dict[str, Any]]
) -> float | None:
    """From the side's last segment sent in the state to the transition its answer caused;
    None when the segment that caused it was a resent one (see the module docstring)."""
    cause = leaving.get("cause")
    if not cause or cause == "application call":
        return None
    t = float(leaving["t_ms"])
    local, remote = str(leaving.get("local")), str(leaving.get("remote"))
    arrived = [
        s
        for s in segments
        if str(s.get("src")) == remote
        and str(s.get("dst")) == local
        and not s.get("dropped")
        and float(s["t_ms"]) <= t + SENT_SLACK_MS
    ]
    if not arrived or arrived[-1]["resent"]:
        return None
    sent = [
        float(s["t_ms"])
        for s in segments
        if str(s.get("src")) == local
        and str(s.get("dst")) == remote
        and entered - SENT_SLACK_MS <= float(s["t_ms"]) <= t
    ]
    return round(t - sent[-1], 3) if sent else None


__all__ = ["Span", "SweepPoint", "sweep_point"]
