"""Every ``--json`` line the test suite makes is validated against the published schema.

The helpers that run labs (``tests.integration.labrun.Recorded``, ``test_cli.cli`` and the
other subprocess helpers) and the ``watch --json`` readers of test_watch.py call these, so a
field added, renamed or retyped anywhere in the record fails the tests that produce it until
``handshake_lab/record/schema.json`` (and docs/json.md) say so. The validator is the full
``jsonschema`` library (a dev dependency), not the package's own subset validator, so the two
are checked against each other as well.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from handshake_lab.record.codec import to_json
from handshake_lab.record.events import Event
from handshake_lab.record.schema import event_errors, run_schema

VALIDATOR = Draft202012Validator(run_schema())


def schema_errors(doc: Any) -> list[str]:
    """The full library's errors for one event, one line each (empty: valid)."""
    return sorted(f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(doc))


def assert_valid_event(doc: Any, where: str = "<event>") -> None:
    errors = schema_errors(doc)
    assert errors == [], f"{where}: not valid by docs/schema.json:\n" + "\n".join(errors[:10])
    # The package's own validator (used by `grade`) must agree that it is valid.
    assert event_errors(doc) == [], where


def assert_valid_lines(text: str, where: str = "<stdout>") -> int:
    """Validate every NDJSON line of ``text``; the number of lines."""
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            assert_valid_event(json.loads(line), f"{where}:{number}")
            count += 1
    return count


def assert_valid_record_event(event: Event) -> None:
    """An event as the engine emits it, written in every language, validates."""
    for lang in ("en", "zh"):
        assert_valid_event(to_json(event, lang), f"{type(event).__name__} ({lang})")


def check_run_output(args: Sequence[str], stdout: str) -> None:
    """After ``handshake-lab ARGS``: validate the run's ``--json`` stdout and ``--save`` file."""
    if not args or args[0] != "run":
        return
    if "--json" in args:
        assert_valid_lines(stdout, "run --json")
    if "--save" in args:
        saved = Path(args[list(args).index("--save") + 1])
        if saved.is_file():
            assert_valid_lines(saved.read_text(encoding="utf-8"), str(saved))


__all__ = [
    "assert_valid_event",
    "assert_valid_lines",
    "assert_valid_record_event",
    "check_run_output",
    "schema_errors",
]
