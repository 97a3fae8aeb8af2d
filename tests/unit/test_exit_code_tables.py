"""The exit-code tables of the README and docs/labs.md list exactly the codes of
``errors.ExitStatus``, and every error class exits with a documented code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handshake_lab import errors
from handshake_lab.errors import ExitStatus, HandshakeLabError

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$")


def table_after(path: Path, heading: str) -> dict[int, str]:
    """The ``| code | meaning |`` rows of the first table after ``heading``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: dict[int, str] = {}
    in_table = False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            in_table = True
            match = ROW.match(line)
            if match:
                code = int(match.group(1))
                assert code not in rows, f"{path.name}: code {code} twice"
                rows[code] = match.group(2)
        elif in_table:
            break
    return rows


TABLES = {
    "README.md": table_after(ROOT / "README.md", "## Exit codes"),
    "docs/labs.md": table_after(ROOT / "docs" / "labs.md", "## Grading and exit codes"),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_table_lists_exactly_the_exit_statuses(name: str) -> None:
    assert sorted(TABLES[name]) == sorted(int(status) for status in ExitStatus)
    assert all(meaning.strip() for meaning in TABLES[name].values())


def test_every_error_class_exits_with_a_documented_code() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, HandshakeLabError)
    ]
    assert len(classes) > 5
    for cls in classes:
        for table in TABLES.values():
            assert int(cls.exit_status) in table, cls.__name__


def test_each_code_has_its_own_class_of_error() -> None:
    """Distinct codes per class: no two ExitStatus members share a value."""
    values = [int(status) for status in ExitStatus]
    assert len(values) == len(set(values))
