"""The run record as NDJSON (``run --json``, docs/json.md) and back.

``to_json(event, lang)`` writes one event; the language only chooses which text of each text
field is written (``TEXT_FIELDS``), so the output for two languages differs in those fields
and in ``lang`` alone. ``from_json`` and ``read_run`` rebuild the records from a saved run; the
texts come back in the language they were saved in. Bump ``JSON_SCHEMA`` when a field changes
meaning or disappears (adding a field does not need a bump).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from handshake_lab.errors import RunInvalidError
from handshake_lab.i18n.lang import LANGS, in_lang
from handshake_lab.record.events import Event, LabResult, LabStarted, SideObservation, StepReport
from handshake_lab.record.run import RunRecord

JSON_SCHEMA = 1
MAX_RUN_BYTES = 64 * 1024 * 1024
"""A saved run larger than this is refused: a 12-step lab writes well under 1 MB."""

EVENT_NAMES: dict[type, str] = {LabStarted: "lab", StepReport: "step", LabResult: "result"}
_EVENT_TYPES: dict[str, type] = {name: cls for cls, name in EVENT_NAMES.items()}

TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "lab": ("title", "summary", "intro", "lang"),
    "step": ("explanation",),
}
"""The fields, per event, that depend on ``--lang``: everything else is language-neutral."""


def to_json(event: Event, lang: str, fill: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The NDJSON object for one event: ``{"schema": 1, "event": "step", ...fields}``.

    ``fill`` finishes each text (the renderer fills in the kernel's figures)."""
    name = EVENT_NAMES[type(event)]
    body: dict[str, Any] = {"schema": JSON_SCHEMA, "event": name}
    texts = TEXT_FIELDS.get(name, ())
    finish = fill or (lambda text: text)
    for key, value in asdict(event).items():
        if key in texts and isinstance(value, dict):
            value = finish(in_lang(value, lang))  # noqa: PLW2901 - the text in one language
        body[key] = value
        if name == "lab" and key == "topology":
            body["lang"] = lang
    return body


def dumps(event: Event, lang: str, fill: Callable[[str], str] | None = None) -> str:
    """One NDJSON line (without the newline)."""
    return json.dumps(to_json(event, lang, fill), ensure_ascii=False)


def from_json(doc: Mapping[str, Any], lang: str | None = None) -> tuple[Event, str | None]:
    """The event an NDJSON object describes, and the language its texts are in: the lab
    event says it (``lang``); later events' texts are in the ``lang`` given (the lab's).

    Raises ``ValueError`` naming the problem; ``read_run`` adds the file and line.
    """
    if doc.get("schema") != JSON_SCHEMA:
        raise ValueError(f"schema {doc.get('schema')!r}, this version reads {JSON_SCHEMA}")
    name = doc.get("event")
    cls = _EVENT_TYPES.get(str(name))
    if cls is None:
        raise ValueError(f"unknown event {name!r}")
    body = {k: v for k, v in doc.items() if k not in {"schema", "event"}}
    if name == "lab":
        lang = body.pop("lang", None)
    if lang is not None and lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} in a {name} event")
    for key in TEXT_FIELDS.get(str(name), ()):
        if key in body and body[key] is not None:
            if not isinstance(body[key], str):
                raise ValueError(f"{key} must be a string")
            body[key] = {lang or "en": body[key]}
    if cls is StepReport:
        observed = body.get("observed", {})
        if not isinstance(observed, dict):
            raise ValueError("observed must be an object")
        body["observed"] = {side: SideObservation(**obs) for side, obs in observed.items()}
    try:
        event: Event = cls(**body)
    except TypeError as exc:  # a required field is missing
        raise ValueError(str(exc).replace("__init__() ", "")) from exc
    return event, lang


def read_events(lines: Iterable[str], where: str = "<run>") -> RunRecord:
    """A run record from NDJSON lines; one ``RunInvalidError`` naming the line if not."""
    started: LabStarted | None = None
    steps: list[StepReport] = []
    result: LabResult | None = None
    lang = "en"
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            event, event_lang = from_json(doc, lang)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise RunInvalidError(f"{where}:{number}: {exc}") from exc
        if isinstance(event, LabStarted):
            if started is not None:
                raise RunInvalidError(f"{where}:{number}: a second lab event")
            started, lang = event, event_lang or "en"
        elif started is None:
            raise RunInvalidError(f"{where}:{number}: the run must start with a lab event")
        elif result is not None:
            raise RunInvalidError(f"{where}:{number}: an event after the result")
        elif isinstance(event, StepReport):
            if event.index != len(steps) + 1:
                raise RunInvalidError(
                    f"{where}:{number}: step {event.index} where step {len(steps) + 1} was due"
                )
            steps.append(event)
        else:
            result = event
    if started is None:
        raise RunInvalidError(f"{where}: no lab event: not a saved run")
    return RunRecord(started=started, steps=tuple(steps), result=result, lang=lang)


def read_run(path: Path) -> RunRecord:
    """A saved ``run --json`` file as a run record."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RUN_BYTES + 1)
    except OSError as exc:
        raise RunInvalidError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_RUN_BYTES:
        raise RunInvalidError(f"{path}: larger than {MAX_RUN_BYTES // 2**20} MiB: not a run")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunInvalidError(f"{path}: not UTF-8 text: not a saved run") from exc
    return read_events(text.splitlines(), str(path))
