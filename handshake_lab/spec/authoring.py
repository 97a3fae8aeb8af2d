"""Writing labs: ``lab check FILE...`` (validate without running) and ``lab new NAME``.

``check_files`` reads each file with the loader's own rules (``read_data_file``,
``check_lab``), so a file that passes here loads for ``run`` exactly the same way; it reports
every problem the loader finds, each with the file, the TOML line of the offending key and the
step. Nothing is run: no socket, no namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from handshake_lab.errors import ExitStatus, LabInvalidError, OutputError, UsageError
from handshake_lab.outputs import check_output, write_output
from handshake_lab.spec.loader import NAME_RE, check_lab, read_data_file
from handshake_lab.spec.model import Lab

_STEP_RE = re.compile(r"^(\d+)(?: \((.*)\))?$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one file."""

    file: str
    line: int | None
    step: int | None  # 1-based step number
    step_id: str | None
    message: str
    exit_status: ExitStatus

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.step is not None:
            where += f": step {self.step}" + (f" ({self.step_id})" if self.step_id else "")
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "step": self.step,
            "step_id": self.step_id,
            "message": self.message,
            "exit": int(self.exit_status),
        }

    @classmethod
    def of(cls, error: LabInvalidError) -> Problem:
        step = step_id = None
        match = _STEP_RE.match(error.step or "")
        if match is not None:
            step, step_id = int(match.group(1)), match.group(2)
        return cls(error.path, error.line, step, step_id, error.detail, error.exit_status)


@dataclass(frozen=True, slots=True)
class FileCheck:
    file: str
    lab: Lab | None
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": not self.problems,
            "lab": self.lab.name if self.lab is not None else None,
            "steps": len(self.lab.steps) if self.lab is not None else None,
            "topologies": list(self.lab.topologies) if self.lab is not None else None,
            "problems": [p.as_dict() for p in self.problems],
        }


def check_file(name: str) -> FileCheck:
    """Every problem of one lab file (missing, unreadable, not TOML, not a valid lab)."""
    path = Path(name)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return FileCheck(
            name,
            None,
            [Problem(name, None, None, None, "no such lab file", ExitStatus.LAB_NOT_FOUND)],
        )
    except OSError:
        pass  # read_data_file says why, as for run
    try:
        raw = read_data_file(path)
    except LabInvalidError as exc:
        return FileCheck(name, None, [Problem.of(exc)])
    lab, errors = check_lab(raw, name, path)
    return FileCheck(name, lab, [Problem.of(e) for e in errors])


def check_files(names: Iterable[str]) -> list[FileCheck]:
    return [check_file(name) for name in names]


def check_status(checks: Iterable[FileCheck]) -> ExitStatus:
    """0 if every file is a valid lab; else 4 (LAB_INVALID) if any file is invalid or
    unreadable, else 5 (LAB_NOT_FOUND): some file does not exist."""
    statuses = {p.exit_status for c in checks for p in c.problems}
    if not statuses:
        return ExitStatus.OK
    if ExitStatus.LAB_INVALID in statuses:
        return ExitStatus.LAB_INVALID
    return max(statuses)


def check_report(checks: Iterable[FileCheck]) -> list[str]:
    """The text report: one line per problem, ``FILE: ok (...)`` for a valid file."""
    lines: list[str] = []
    for check in checks:
        if check.problems:
            lines += [str(p) for p in check.problems]
        elif check.lab is not None:
            lab = check.lab
            lines.append(
                f"{check.file}: ok ({lab.name}, {len(lab.steps)} steps, "
                f"{', '.join(lab.topologies)})"
            )
    return lines


def new_lab_path(name: str) -> tuple[Path, str]:
    """``demo`` -> (``demo.toml``, ``demo``); ``labs/x.toml`` -> (that path, ``x``)."""
    path = Path(name if name.endswith(".toml") else f"{name}.toml")
    stem = path.stem
    if not NAME_RE.match(stem):
        raise UsageError(
            f"{path}: a lab name is lowercase letters, digits, '-' or '_' (not {stem!r})"
        )
    return path, stem


def new_lab_text(name: str) -> str:
    """The commented template ``lab new`` writes (it passes ``lab check`` and runs): the
    packaged ``lab_template.toml`` with ``NAME`` replaced."""
    template = resources.files("handshake_lab.spec").joinpath("lab_template.toml")
    return template.read_text(encoding="utf-8").replace("NAME", name)


def write_new_lab(name: str) -> Path:
    """Write the template for lab ``name`` (``NAME.toml``, or the ``.toml`` path given) with the
    output-file rules of ``--pcap`` (no symlink, no missing directory, whole or not at all);
    an existing file is refused, never replaced: it may be a lab someone wrote."""
    path, stem = new_lab_path(name)
    if path.exists() or path.is_symlink():
        raise OutputError(f"{path}: already exists; refusing to overwrite it (pick another name)")
    check_output(path)
    text = new_lab_text(stem).encode()
    write_output(path, lambda stream: stream.write(text))
    return path
