"""What a run produces: plain, JSON-serialisable records.

The table renderer and the ``--json`` emitter both read these records, so the two outputs can
never tell different stories. ``to_json`` gives the stable NDJSON form documented in
``docs/json.md``; bump ``JSON_SCHEMA`` when a field changes meaning or disappears (adding a field
does not need a bump).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

JSON_SCHEMA = 1


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


@dataclass(frozen=True, slots=True)
class LabStarted:
    name: str
    title: str
    summary: str
    loop: str
    topology: str
    lang: str
    host: str
    ports: dict[str, int]
    observers: list[str]
    steps: int
    versions: dict[str, str]
    intro: str | None = None
    path: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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
    explanation: str
    action_ms: float
    settle_ms: float
    total_steps: int = 0
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

_EVENT_NAMES: dict[type, str] = {LabStarted: "lab", StepReport: "step", LabResult: "result"}


def to_json(event: Event) -> dict[str, Any]:
    """The NDJSON object for one event: ``{"schema": 1, "event": "step", ...fields}``."""
    body = asdict(event)
    return {"schema": JSON_SCHEMA, "event": _EVENT_NAMES[type(event)], **body}
