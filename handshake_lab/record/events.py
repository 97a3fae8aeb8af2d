"""The events of a run: plain, immutable, language-neutral records.

A run is a ``LabStarted``, one ``StepReport`` per step, and (unless interrupted) a ``LabResult``.
The engine (``handshake_lab.lab``) produces them; every view (the terminal tables, the ladder,
``--json``, the quiz summary) is drawn from them and from nothing else, so two views of one
run cannot tell different stories.

Language-neutral: a text a user reads is kept in every language (``Texts``, lang -> text), and
only a renderer picks one. Everything else in a record is a name, a number or a kernel's own
spelling. ``record.codec`` gives the NDJSON form documented in ``docs/json.md`` and reads it
back.

Segments and transitions are JSON-ready dicts (their keys are documented in docs/json.md):
each segment names its conversation (``conv``, an index in order of first appearance in the
run) and which end of it sent it (``sender``: ``client`` or ``server`` of that conversation);
each transition names the socket by ``local`` and ``remote`` address, so the ladder places both
without re-deriving anything from packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handshake_lab.observe.base import mapped_text

Texts = dict[str, str]
"""A text in each language it exists in (``{"en": ..., "zh": ...}``)."""


@dataclass(frozen=True, slots=True)
class SideObservation:
    """One side's socket as the kernel reported it at the end of a step."""

    side: str
    state: str  # a Linux state name, or "ABSENT"
    local: str | None
    remote: str | None
    sources: dict[str, str | None]  # each source's own spelling; None = that source did not see it
    agree: bool  # all sources said the same
    timer: dict[str, Any] | None = None  # {"name", "remaining", "count"} from ss
    pid: int | None = None
    note: str | None = None
    mapped: bool = False
    """The socket is an IPv6 one talking IPv4: ss and psutil print its ``local`` and ``remote``
    as ``[::ffff:a.b.c.d]:port``. They stay plain IPv4 here, the 4-tuple every view matches
    with the segments (which cross as IPv4); ``observe.base.mapped_text`` spells them back."""

    def tuple_text(self) -> str | None:
        """The 4-tuple as ss prints it: ``L > R``, ``L *`` for a listener, mapped ends as
        ``[::ffff:a.b.c.d]:port``; None when there is no socket. What every view shows."""
        if not self.local:
            return None
        local = mapped_text(self.local, mapped=self.mapped)
        if not self.remote:
            return f"{local} *"
        return f"{local} > {mapped_text(self.remote, mapped=self.mapped)}"


@dataclass(frozen=True, slots=True)
class LabStarted:
    name: str
    title: Texts
    summary: Texts
    loop: str
    topology: str
    host: str
    ports: dict[str, int]
    observers: list[str]
    steps: int
    versions: dict[str, str]
    intro: Texts | None = None
    path: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kernel: dict[str, str | None] = field(default_factory=dict)
    """The sysctls the texts cite and the timer sysctls, as the run's client end saw them
    (None: this kernel has no such sysctl). ``{sysctl:KEY}`` in a text is filled from here."""


@dataclass(frozen=True, slots=True)
class StepReport:
    index: int
    id: str
    actor: str
    action: str
    args: dict[str, Any]
    expected: dict[str, str]
    observed: dict[str, SideObservation]
    outcome: str | None
    expected_outcome: str | None
    data: str | None
    expected_data: str | None
    facts: dict[str, Any]
    expected_facts: dict[str, Any]
    agrees: bool
    mismatches: list[str]
    explain_key: str
    explanation: Texts
    action_ms: float
    settle_ms: float
    total_steps: int = 0
    observed_ms: float | None = None
    """When the table read shown in ``observed`` was made (ms since the run began)."""
    segments: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    quiz: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LabResult:
    name: str
    passed: bool
    steps: int
    agreed: int
    disagreed: int
    duration_s: float
    settle_s: float
    disagreed_steps: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    quiz: dict[str, Any] | None = None


Event = LabStarted | StepReport | LabResult
