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

import errno
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handshake_lab.errors import AnswersInvalidError, LabInvalidError
from handshake_lab.i18n.labels import LABELS, label
from handshake_lab.i18n.lang import pick
from handshake_lab.spec.loader import read_data_file
from handshake_lab.spec.model import ABSENT, OUTCOMES, Lab, Step
from handshake_lab.spec.source import SourceMap, toml_error_line
from handshake_lab.tcp.states import parse_state

EXPR_RE = re.compile(r"^\s*[+-]?\s*(\w+)(\s*[+-]\s*\w+)*\s*$")
TERM_RE = re.compile(r"([+-]?)\s*(\w+)")


def _asked(key: str, **values: object) -> dict[str, str]:
    """A question in every language (``i18n.labels``), its values filled in."""
    return {lang: label(key, lang).format(**values) for lang in LABELS}


@dataclass
class Question:
    key: str  # side name, "outcome", or "ack"
    texts: dict[str, str]  # the question in each language; the record keeps English
    kind: str  # "state" | "outcome" | "number"
    names: dict[str, int] = field(default_factory=dict)  # variables an answer may use
    answer: str | None = None
    truth: str | None = None
    correct: bool | None = None

    @property
    def text(self) -> str:
        return self.texts["en"]

    def shown(self, lang: str) -> str:
        """The question as the student reads it, in the run's language."""
        return self.texts.get(pick(lang), self.text)

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
    """An integer, or a sum/difference of integers and the question's names (mod 2**32).
    Spaces and case do not matter: ``w+1``, ``w + 1`` and ``W+1`` are the same answer."""
    text = text.lower()
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


def expression_names(text: str) -> set[str] | None:
    """The names an answer expression uses (lower case), or None if it is no expression."""
    text = text.lower()
    if not EXPR_RE.match(text):
        return None
    return {term for _, term in TERM_RE.findall(text) if not term.isdigit()}


def normalise_outcome(text: str) -> str:
    """An outcome as graded: case and spaces ignored (``eof`` is ``EOF``)."""
    return text.strip().upper()


KNOWN_OUTCOMES = {normalise_outcome(o) for o in OUTCOMES} | set(errno.errorcode.values())


@dataclass(frozen=True, slots=True)
class Askable:
    """A question a step can ask, known before the run: its key, kind and, for numbers, the
    names an answer may use (their values come from the run's capture)."""

    key: str
    kind: str  # "state" | "outcome" | "number"
    names: tuple[str, ...] = ()


def askable(step: Step) -> list[Askable]:
    """Every question ``Quiz.questions`` may ask before ``step`` (the number only when the
    run captures segments): what an answers file may answer for this step."""
    out = [Askable(side, "state") for side in step.expect]
    if step.outcome is not None and step.outcome != "ok":
        out.append(Askable("outcome", "outcome"))
    if step.actor != "lab":
        if step.action in {"close", "send_eof"}:
            out.append(Askable("ack", "number", ("w",) if step.actor == "server" else ("u",)))
        elif step.action == "send":
            out.append(Askable("ack", "number", ("s", "n")))
    return out


def load_answers(path: Path, lab: Lab) -> dict[str, dict[str, str]]:
    """Read an answers file for ``lab`` strictly: every step, side, question and state must
    be one the lab has, else ``AnswersInvalidError`` naming the file and the line. An empty
    answer (``""``, as ``quiz template`` writes) is allowed: it is graded as not answered."""
    where = str(path)
    try:
        raw = read_data_file(path)  # bounded, regular files only (not /dev/zero, not a FIFO)
    except LabInvalidError as exc:
        raise AnswersInvalidError(where, exc.detail) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise AnswersInvalidError(where, f"not UTF-8 text (byte {exc.start})", line) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AnswersInvalidError(
            where, f"not valid TOML: {exc}", toml_error_line(str(exc))
        ) from exc
    except RecursionError as exc:
        raise AnswersInvalidError(where, "not valid TOML: nested too deeply") from exc
    source = SourceMap(text)
    steps = {step.id: step for step in lab.steps}
    out: dict[str, dict[str, str]] = {}
    for step_id, table in doc.items():
        line = source.line_of((step_id,))
        if step_id not in steps:
            raise AnswersInvalidError(
                where, f"[{step_id}]: lab {lab.name} has no step {step_id!r}", line
            )
        if not isinstance(table, dict):
            raise AnswersInvalidError(where, f"[{step_id}] must be a table of answers", line)
        questions = {q.key: q for q in askable(steps[step_id])}
        answers: dict[str, str] = {}
        for key, value in table.items():
            line = source.line_of((step_id, key))
            question = questions.get(key)
            if question is None:
                asked = ", ".join(questions) or "nothing"
                raise AnswersInvalidError(
                    where,
                    f"[{step_id}] {key}: this step asks no such question (it asks: {asked})",
                    line,
                )
            answers[key] = _checked_answer(where, line, step_id, question, value)
        out[step_id] = answers
    return out


def _checked_answer(where: str, line: int, step_id: str, question: Askable, value: object) -> str:
    label = f"[{step_id}] {question.key}"
    if question.kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise AnswersInvalidError(where, f"{label}: the answer must be a string", line)
    if not value.strip():
        return value  # not answered yet
    if question.kind == "state":
        if normalise_state_answer(value) is None:
            raise AnswersInvalidError(
                where,
                f"{label}: {value!r} is not a TCP state (SYN_SENT, FIN-WAIT-2, SYN-RECEIVED, "
                "... or ABSENT)",
                line,
            )
    elif question.kind == "outcome":
        if normalise_outcome(value) not in KNOWN_OUTCOMES:
            raise AnswersInvalidError(
                where, f"{label}: {value!r} is not an outcome (ok, EOF, an errno name...)", line
            )
    else:
        names = expression_names(value)
        if names is None or not names <= set(question.names):
            given = " and ".join(question.names)
            raise AnswersInvalidError(
                where,
                f"{label}: {value!r} is not a number or an expression of {given} (e.g. "
                f"{question.names[0]}+1)",
                line,
            )
    return value


class Quiz:
    """Questions before a step, grading after it; answers from a terminal or a file."""

    def __init__(self, answers: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.answers = answers
        self.asked: list[Question] = []

    @staticmethod
    def load_answers(path: Path, lab: Lab) -> dict[str, dict[str, str]]:
        """``[STEP_ID]`` tables of ``side = "STATE"``, ``outcome = "..."``, ``ack = "u+1"``,
        checked against ``lab`` (``load_answers``)."""
        return load_answers(path, lab)

    def questions(
        self, step: Step, tuples: Mapping[str, str], numbers: Mapping[str, int]
    ) -> list[Question]:
        """What to ask before ``step``: its expected sides, its outcome, its arithmetic."""
        qs: list[Question] = []
        for side in step.expect:
            where = f" ({tuples[side]})" if side in tuples else ""
            qs.append(Question(side, _asked("q_state", side=f"{side}{where}"), "state"))
        if step.outcome is not None and step.outcome != "ok":
            # Only outcomes worth predicting: an errno, EOF, data, a pending connect.
            qs.append(Question("outcome", _asked("q_outcome"), "outcome"))
        fin = "u" if "u" in numbers else "w" if "w" in numbers else None
        if fin is not None:
            qs.append(
                Question(
                    "ack",
                    _asked("q_ack_fin", name=f"{fin}={numbers[fin]}"),
                    "number",
                    {fin: numbers[fin]},
                )
            )
        elif "s" in numbers and "n" in numbers:
            qs.append(
                Question(
                    "ack",
                    _asked("q_ack_data_live", s=numbers["s"], n=numbers["n"]),
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
            q.answer = None if value is None or not str(value).strip() else str(value)
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
                q.correct = q.answer is not None and normalise_outcome(
                    q.answer
                ) == normalise_outcome(outcome or "")
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
