"""Predict, then observe: ``run LAB --quiz``.

Before each step the student predicts what the kernel will report: each expected side's state,
the outcome where the lab expects one, and, when segments are being captured, the numbers the
seed's arithmetic implies ("the FIN will carry seq=u=1694696942: what ack comes back?"). The
numbers come from this run, so a key of plain integers copied from someone else fails; an
answer may be an expression of the names the question gives (``u+1``), which shows the rule.

Grading uses what the kernel and the wire actually said in this run, not the lab's
expectations: the kernel is the authority. Answers come from a terminal or from a file
(``--answers``), so a run can be graded by exit code and JSON.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handshake_lab.errors import LabInvalidError
from handshake_lab.spec.loader import read_data_file
from handshake_lab.spec.model import ABSENT, Step
from handshake_lab.tcp.states import parse_state

EXPR_RE = re.compile(r"^\s*[+-]?\s*(\w+)(\s*[+-]\s*\w+)*\s*$")
TERM_RE = re.compile(r"([+-]?)\s*(\w+)")


@dataclass
class Question:
    key: str  # side name, "outcome", or "ack"
    text: str
    kind: str  # "state" | "outcome" | "number"
    names: dict[str, int] = field(default_factory=dict)  # variables an answer may use
    answer: str | None = None
    truth: str | None = None
    correct: bool | None = None

    def record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "question": self.text,
            "answer": self.answer,
            "truth": self.truth,
            "correct": self.correct,
        }


def normalise_state_answer(text: str) -> str | None:
    """A state name in any common spelling (``tcp.states.parse_state``), or ABSENT; None if
    unknown. A prediction of CLOSED means "no socket": a closed socket leaves the kernel's
    table, so in a quiz it is graded as ABSENT (as are GONE and NONE)."""
    key = text.strip().upper().replace("-", "_").replace(" ", "_")
    if key in {ABSENT, "CLOSED", "GONE", "NONE"}:
        return ABSENT
    state = parse_state(key)
    return state.name if state is not None else None


def evaluate(text: str, names: Mapping[str, int]) -> int | None:
    """An integer, or a sum/difference of integers and the question's names (mod 2**32)."""
    if not EXPR_RE.match(text):
        return None
    total = 0
    for sign, term in TERM_RE.findall(text):
        if term.isdigit():
            value = int(term)
        elif term in names:
            value = names[term]
        else:
            return None
        total += -value if sign == "-" else value
    return total % 2**32


class Quiz:
    """Questions before a step, grading after it; answers from a terminal or a file."""

    def __init__(self, answers: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.answers = answers
        self.asked: list[Question] = []

    @staticmethod
    def load_answers(path: Path) -> dict[str, dict[str, object]]:
        """``[STEP_ID]`` tables of ``side = "STATE"``, ``outcome = "..."``, ``ack = "u+1"``."""
        raw = read_data_file(path)  # bounded, regular files only (not /dev/zero, not a FIFO)
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise LabInvalidError(str(path), f"not valid TOML: {exc}") from exc
        out: dict[str, dict[str, object]] = {}
        for step_id, table in doc.items():
            if not isinstance(table, dict):
                raise LabInvalidError(str(path), f"[{step_id}] must be a table of answers")
            out[step_id] = dict(table)
        return out

    def questions(
        self, step: Step, tuples: Mapping[str, str], numbers: Mapping[str, int]
    ) -> list[Question]:
        """What to ask before ``step``: its expected sides, its outcome, its arithmetic."""
        qs: list[Question] = []
        for side in step.expect:
            where = f" ({tuples[side]})" if side in tuples else ""
            qs.append(Question(side, f"{side}{where}: which state after this step?", "state"))
        if step.outcome is not None and step.outcome != "ok":
            # Only outcomes worth predicting: an errno, EOF, data, a pending connect.
            qs.append(
                Question("outcome", "what will the call return (ok, EOF, an errno...)?", "outcome")
            )
        fin = "u" if "u" in numbers else "w" if "w" in numbers else None
        if fin is not None:
            qs.append(
                Question(
                    "ack",
                    f"the FIN will carry seq={fin}={numbers[fin]}: what ack will the peer send?",
                    "number",
                    {fin: numbers[fin]},
                )
            )
        elif "s" in numbers and "n" in numbers:
            qs.append(
                Question(
                    "ack",
                    f"the data starts at seq=s={numbers['s']} and is n={numbers['n']} bytes: "
                    "what ack will the peer send?",
                    "number",
                    {"s": numbers["s"], "n": numbers["n"]},
                )
            )
        return qs

    def prefilled(self, step: Step, qs: Sequence[Question]) -> bool:
        """Fill answers from the answers file; True if this quiz is file-driven."""
        if self.answers is None:
            return False
        given = self.answers.get(step.id, {})
        for q in qs:
            value = given.get(q.key)
            q.answer = None if value is None else str(value)
        return True

    def grade(
        self,
        qs: Sequence[Question],
        observed_states: Mapping[str, str],
        outcome: str | None,
        ack: int | None,
    ) -> None:
        for q in qs:
            if q.kind == "state":
                q.truth = observed_states.get(q.key, ABSENT)
                q.correct = q.answer is not None and normalise_state_answer(q.answer) == q.truth
            elif q.kind == "outcome":
                q.truth = outcome
                q.correct = q.answer is not None and q.answer.strip() == (outcome or "")
            else:
                q.truth = None if ack is None else str(ack)
                got = None if q.answer is None else evaluate(q.answer, q.names)
                q.correct = ack is not None and got == ack
                if ack is None:
                    q.correct = None  # nothing captured to grade against: not counted
            self.asked.append(q)

    def summary(self) -> dict[str, Any]:
        graded = [q for q in self.asked if q.correct is not None]
        right = sum(1 for q in graded if q.correct)
        return {
            "asked": len(graded),
            "correct": right,
            "score": round(100 * right / len(graded), 1) if graded else 100.0,
        }
