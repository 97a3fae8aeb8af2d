"""docs/labs.md is the reference for every key of a lab file: its tables must list exactly
what the loader accepts, both ways, so neither can change without the other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handshake_lab.spec.loader import HOLD_KEYS, STEP_KEYS, TOP_KEYS
from handshake_lab.spec.model import ACTIONS, COURSE_KEYS, HOLD_KINDS, OUTCOMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "labs.md"
TICKED = re.compile(r"`([^`]+)`")


def section(heading: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def tables(heading: str) -> list[list[list[str]]]:
    """Each markdown table of a section: rows of cells, header and rule left out."""
    out: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*section(heading).splitlines(), ""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            out.append(rows[2:])
            rows = []
    return out


def first_column(heading: str, which: int = 0) -> set[str]:
    names = set()
    for row in tables(heading)[which]:
        ticked = TICKED.findall(row[0])
        if ticked:
            names.add(ticked[0])
    return names


def test_top_level_keys_are_documented_both_ways() -> None:
    documented = {"step" if k == "[[step]]" else k for k in first_column("Top-level keys")}
    assert documented == set(TOP_KEYS)


def test_step_keys_are_documented_both_ways() -> None:
    assert first_column("Step keys") == set(STEP_KEYS)


def test_course_keys_are_documented_both_ways() -> None:
    assert first_column("Course") == set(COURSE_KEYS)


def test_hold_keys_and_kinds_are_documented_both_ways() -> None:
    assert first_column("Holds", 0) == set(HOLD_KEYS)
    assert first_column("Holds", 1) == set(HOLD_KINDS)


def test_every_action_is_documented_and_every_documented_action_exists() -> None:
    assert first_column("Actions") == set(ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_each_actions_arguments_are_documented_both_ways(action: str) -> None:
    (row,) = [r for r in tables("Actions")[0] if TICKED.findall(r[0]) == [action]]
    documented = set(TICKED.findall(row[2]))
    assert documented == set(ACTIONS[action].args)


def test_every_named_outcome_is_documented() -> None:
    assert set(OUTCOMES) <= first_column("Outcomes")
