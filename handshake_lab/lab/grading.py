"""Class grading: is each student's saved run complete and consistent, and how did it score?

``handshake-lab grade DIR`` reads one submission per student (``NAME.jsonl``, a saved
``run --json``/``--save`` run, and optionally ``NAME.answers.toml``, the answers file the run
was graded with) and classifies each:

``ok``                 complete, consistent, the kernel agreed, every prediction right
``wrong-predictions``  as ok, but some quiz predictions were wrong
``kernel-disagreed``   complete and consistent, but the kernel disagreed with the lab
``truncated``          the run stops early (no result line, or its last line cut off)
``inconsistent``       the record contradicts itself: not what the tool writes (edited)
``unreadable``         not a saved run at all (not UTF-8, not JSON, no lab event)

"Consistent" is all the record can show about itself: every line valid by the published
schema; one lab event, every step in order, one result; the steps those of the built-in lab
file; timings that only go forward and add up; each state the one its sources' spellings name,
and the one the transition stream last reported; each verdict the one the expectations and
observations give; the captured segments' seq/ack arithmetic (each end's ISN constant, every
relative number and label derived from the absolute ones, no ack of bytes never sent); states
that a FIN on the wire allows; and the quiz's grades and score recomputed from its answers
(and equal to the answers file, when one is given). A run that was never on a kernel but was
written consistently passes all of this: docs/grading.md says what this can and cannot prove.

Pure: no sockets, no clock. ``render.grade`` draws the class summary from ``Graded``.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handshake_lab import __version__
from handshake_lab.errors import ClassDirError, HandshakeLabError
from handshake_lab.lab.quiz import evaluate, normalise_state_answer
from handshake_lab.lab.runner import NON_ERROR_OUTCOMES, fact_matches
from handshake_lab.observe.aliases import TABLES
from handshake_lab.placement.topology import Topology
from handshake_lab.record.codec import MAX_RUN_BYTES, read_events
from handshake_lab.record.events import StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.record.schema import event_errors
from handshake_lab.spec.loader import builtin_names, find_lab
from handshake_lab.spec.model import ABSENT, Lab
from handshake_lab.tcp.states import TcpState

CLASSES: tuple[str, ...] = (
    "ok",
    "wrong-predictions",
    "kernel-disagreed",
    "truncated",
    "inconsistent",
    "unreadable",
)
RUN_SUFFIX = ".jsonl"
ANSWERS_SUFFIX = ".answers.toml"
MAX_ANSWERS_BYTES = 1024 * 1024
SEQ_SPACE = 2**32
GONE = frozenset({"CLOSE", ABSENT})
KERNEL_RELEASE = re.compile(r"^\d+\.\d+(\.\d+)?\S*$")
BIG_NUMBER = re.compile(r"\b\d{6,10}\b")
QUESTION_NAME = re.compile(r"\b([a-z])=(\d+)\b")
SENT_FIN = frozenset({"FIN_WAIT2", "TIME_WAIT", "CLOSING"})
"""States a socket reaches only after its own FIN was acknowledged (or crossed the peer's):
that FIN crossed the capture point."""
GOT_FIN = frozenset({"CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT"})
"""States a socket reaches only after it received the peer's FIN."""
TIME_SLACK_MS = 1.0


@dataclass(frozen=True, slots=True)
class Submission:
    """One student's files: the saved run and, optionally, the answers file."""

    name: str
    run: Path
    answers: Path | None = None


@dataclass(frozen=True, slots=True)
class StepGrade:
    """One step of a student's run, as the class summary shows it."""

    id: str
    agrees: bool
    asked: int
    correct: int
    wrong: tuple[dict[str, Any], ...] = ()
    """The quiz entries graded wrong (``key``, ``answer``, ``truth``, ``question``)."""

    @property
    def passed(self) -> bool:
        """The kernel agreed and every graded prediction was right."""
        return self.agrees and self.correct == self.asked


@dataclass(frozen=True, slots=True)
class Graded:
    """One submission, graded."""

    name: str
    klass: str
    reason: str
    run_file: str
    answers_file: str | None = None
    lab: str | None = None
    topology: str | None = None
    lang: str | None = None
    kernel: str | None = None
    steps: tuple[StepGrade, ...] = ()
    total_steps: int = 0
    agreed: int = 0
    quiz: dict[str, Any] | None = None
    problems: tuple[str, ...] = ()
    explanations: dict[str, str] = field(default_factory=dict)
    """Each step's explanation as the record holds it (``step id -> text``)."""
    fingerprint: str | None = None
    """What no two runs share (ports, the clock of every table read, the ISNs): two
    submissions with the same fingerprint are one run handed in twice."""
    same_run_as: tuple[str, ...] = ()
    """The other students whose submission is this same run (``grade_class`` fills it)."""

    @property
    def score(self) -> float | None:
        return None if self.quiz is None else float(self.quiz.get("score", 0.0))


# -- the directory ------------------------------------------------------------------------


def find_submissions(directory: Path) -> list[Submission]:
    """The submissions in ``directory``, by student name; ``ClassDirError`` for a directory
    that is not one: missing, not a directory, no submission, or a file in another layout.

    The layout: one ``NAME.jsonl`` per student and, optionally, ``NAME.answers.toml`` beside
    it. Hidden files (``.DS_Store``) are skipped; anything else is refused, named."""
    if not directory.exists():
        raise ClassDirError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise ClassDirError(f"{directory}: not a directory of submissions")
    runs: dict[str, Path] = {}
    answers: dict[str, Path] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise ClassDirError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_dir():
            raise ClassDirError(
                f"{entry}: a directory; a submission is NAME.jsonl (and NAME.answers.toml) "
                "directly in the class directory"
            )
        if name.endswith(ANSWERS_SUFFIX) and len(name) > len(ANSWERS_SUFFIX):
            answers[name[: -len(ANSWERS_SUFFIX)]] = entry
        elif name.endswith(RUN_SUFFIX) and len(name) > len(RUN_SUFFIX):
            runs[name[: -len(RUN_SUFFIX)]] = entry
        else:
            raise ClassDirError(
                f"{entry}: not a submission: expected NAME.jsonl (a saved run) or "
                "NAME.answers.toml"
            )
    for student, path in sorted(answers.items()):
        if student not in runs:
            raise ClassDirError(f"{path}: an answers file without its run {student}.jsonl")
    if not runs:
        raise ClassDirError(f"{directory}: no submissions (NAME.jsonl files)")
    return [Submission(student, runs[student], answers.get(student)) for student in sorted(runs)]


# -- one submission -----------------------------------------------------------------------


class _Refused(Exception):
    """A submission's class is decided: ``klass`` with ``reason``."""

    def __init__(self, klass: str, reason: str) -> None:
        super().__init__(reason)
        self.klass = klass
        self.reason = reason


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The JSON objects of a saved run, and whether its last line was cut off."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RUN_BYTES + 1)
    except OSError as exc:
        raise _Refused("unreadable", f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_RUN_BYTES:
        raise _Refused("unreadable", f"larger than {MAX_RUN_BYTES // 2**20} MiB: not a run")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused("unreadable", "not UTF-8 text: not a saved run") from exc
    lines = text.split("\n")
    docs: list[dict[str, Any]] = []
    cut = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            last = number == len(lines)  # no newline after it: the writer stopped mid-line
            if last and docs:
                cut = True
                break
            raise _Refused("unreadable", f"line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(doc, dict):
            raise _Refused("unreadable", f"line {number}: not a JSON object")
        docs.append(doc)
    if not docs:
        raise _Refused("unreadable", "empty: not a saved run")
    if docs[0].get("event") != "lab":
        raise _Refused("unreadable", "no lab event on line 1: not a saved run")
    return docs, cut


def _read_answers(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_ANSWERS_BYTES + 1)
        doc = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise _Refused("unreadable", f"{path.name}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _Refused("unreadable", f"{path.name}: not a TOML answers file: {exc}") from exc
    return {str(k): v for k, v in doc.items() if isinstance(v, dict)}


def grade_submission(sub: Submission) -> Graded:
    """Read, check and classify one submission; never raises for a student's file."""
    base = Graded(
        name=sub.name,
        klass="unreadable",
        reason="",
        run_file=sub.run.name,
        answers_file=sub.answers.name if sub.answers else None,
    )
    try:
        docs, cut = _read_lines(sub.run)
        answers = _read_answers(sub.answers) if sub.answers else None
        for number, doc in enumerate(docs, start=1):
            errors = event_errors(doc)
            if errors:
                raise _Refused(
                    "inconsistent", f"line {number}: not valid by the schema: {errors[0]}"
                )
        try:
            record = read_events((json.dumps(d) for d in docs), sub.run.name)
        except HandshakeLabError as exc:
            raise _Refused("inconsistent", str(exc).removeprefix(f"{sub.run.name}:")) from exc
    except _Refused as refused:
        return _with(base, klass=refused.klass, reason=refused.reason)
    summary = _summary(base, record)
    if cut or record.result is None:
        done = len(record.steps)
        where = "its last line is cut off" if cut else "no result line"
        return _with(
            summary,
            klass="truncated",
            reason=f"{where}: the run stops after step {done} of {record.started.steps}",
        )
    problems = audit(record, answers)
    if problems:
        return _with(summary, klass="inconsistent", reason=problems[0], problems=tuple(problems))
    result = record.result
    if not result.passed:
        return _with(
            summary,
            klass="kernel-disagreed",
            reason=f"the kernel disagreed at {', '.join(result.disagreed_steps)}",
        )
    quiz = result.quiz
    if quiz is not None and quiz.get("correct", 0) < quiz.get("asked", 0):
        wrong = quiz["asked"] - quiz["correct"]
        return _with(
            summary,
            klass="wrong-predictions",
            reason=f"{wrong} of {quiz['asked']} predictions wrong (score {quiz['score']})",
        )
    reason = "every step agreed"
    if quiz is not None:
        reason += f", every prediction right ({quiz['correct']}/{quiz['asked']})"
    return _with(summary, klass="ok", reason=reason)


def _with(graded: Graded, **changes: Any) -> Graded:
    values = {name: getattr(graded, name) for name in Graded.__dataclass_fields__}
    values.update(changes)
    return Graded(**values)


def _summary(base: Graded, record: RunRecord) -> Graded:
    steps = tuple(
        StepGrade(
            id=step.id,
            agrees=step.agrees,
            asked=sum(1 for q in step.quiz if q.get("correct") is not None),
            correct=sum(1 for q in step.quiz if q.get("correct") is True),
            wrong=tuple(
                {k: q.get(k) for k in ("key", "answer", "truth", "question")}
                for q in step.quiz
                if q.get("correct") is False
            ),
        )
        for step in record.steps
    )
    return _with(
        base,
        lab=record.started.name,
        topology=record.started.topology,
        lang=record.lang,
        kernel=record.started.versions.get("kernel"),
        steps=steps,
        total_steps=record.started.steps,
        agreed=sum(1 for s in record.steps if s.agrees),
        quiz=record.result.quiz if record.result is not None else None,
        explanations={step.id: next(iter(step.explanation.values()), "") for step in record.steps},
        fingerprint=_fingerprint(record),
    )


def _fingerprint(record: RunRecord) -> str:
    lab = record.started
    isns = [seg["seq"] for seg in record.segments() if "SYN" in _flags(seg)][:4]
    clocks = [step.observed_ms for step in record.steps[:4]]
    return json.dumps([lab.name, lab.versions.get("kernel"), lab.ports, clocks, isns])


# -- the checks ---------------------------------------------------------------------------


def audit(record: RunRecord, answers: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """Every way a complete record contradicts itself (empty: consistent)."""
    problems: list[str] = []
    for check in (
        _structure,
        _lab_file,
        _observations,
        _timeline,
        _fins,
        _segments,
        _wire_bookkeeping,
        _checks,
        _timings,
        _kernel,
        _verdicts,
        _quiz,
    ):
        problems += check(record)
    if answers is not None:
        problems += _answers(record, answers)
    return problems


def _structure(record: RunRecord) -> list[str]:
    lab, result = record.started, record.result
    out: list[str] = []
    assert result is not None
    if len(record.steps) != lab.steps:
        out.append(f"{len(record.steps)} steps where the lab event announced {lab.steps}")
    if result.steps != len(record.steps):
        out.append(f"the result counts {result.steps} steps, the run has {len(record.steps)}")
    if result.name != lab.name:
        out.append(f"the result names lab {result.name!r}, the run is {lab.name!r}")
    ids = [s.id for s in record.steps]
    if len(set(ids)) != len(ids):
        out.append("a step id appears twice")
    for step in record.steps:
        if step.total_steps != lab.steps:
            out.append(f"step {step.id}: total_steps {step.total_steps}, the lab has {lab.steps}")
        if step.explain_key != f"{lab.name}.step.{step.id}":
            out.append(f"step {step.id}: explain_key {step.explain_key!r} is not this step's")
    return out


def _builtin(record: RunRecord) -> Lab | None:
    """The built-in lab the run ran, when this version of the tool has the same one: a run
    of another version's lab file, or of a copy elsewhere, is not compared with ours."""
    name = record.started.name
    path = record.started.path or ""
    if name not in builtin_names() or Path(path).name != f"{name}.toml":
        return None
    if record.started.versions.get("handshake_lab") != __version__:
        return None
    try:
        return find_lab(name)
    except HandshakeLabError:
        return None


def _lab_file(record: RunRecord) -> list[str]:
    """A built-in lab's steps are the lab file's: ids, actors, actions, expectations."""
    lab = _builtin(record)
    if lab is None:
        return []
    try:
        step_set = Topology(record.started.topology).step_set
    except ValueError:
        return [f"unknown topology {record.started.topology!r}"]
    wanted = lab.steps_for(step_set)
    got = [s.id for s in record.steps]
    if got != [s.id for s in wanted]:
        return [f"the steps {got} are not the {lab.name} lab's {[s.id for s in wanted]}"]
    out = []
    for step, spec in zip(record.steps, wanted, strict=True):
        expected = {
            side: (state.name if state is not None else ABSENT)
            for side, state in spec.expect.items()
        }
        if (step.actor, step.action) != (spec.actor, spec.action):
            out.append(f"step {step.id}: {step.actor} {step.action} is not the lab's step")
        if step.expected != expected:
            out.append(f"step {step.id}: expectations {step.expected} are not the lab's")
        if step.expected_outcome != spec.outcome or step.expected_data != spec.data:
            out.append(f"step {step.id}: expected outcome or data are not the lab's")
    return out


def _step_problems(step: StepReport) -> int:
    """How many expectations of ``step`` failed, recomputed as the runner does."""
    count = 0
    for side, want in step.expected.items():
        obs = step.observed.get(side)
        got = obs.state if obs is not None else ABSENT
        if got != want or (obs is not None and not obs.agree):
            count += 1
    if step.expected_outcome is not None:
        count += step.outcome != step.expected_outcome
    elif step.outcome is not None and step.outcome not in NON_ERROR_OUTCOMES:
        count += 1
    if step.expected_data is not None:
        count += step.data != step.expected_data
    for key, want_value in step.expected_facts.items():
        count += not fact_matches(want_value, step.facts.get(key))
    return count


def _verdicts(record: RunRecord) -> list[str]:
    out = []
    for step in record.steps:
        if step.agrees != (not step.mismatches):
            out.append(
                f"step {step.id}: agrees={step.agrees} with {len(step.mismatches)} mismatches"
            )
        failed = _step_problems(step)
        if failed != len(step.mismatches):
            out.append(
                f"step {step.id}: {len(step.mismatches)} mismatches listed, but its "
                f"expectations and observations differ in {failed}"
            )
    result = record.result
    assert result is not None
    disagreed = [s.id for s in record.steps if not s.agrees]
    if result.passed != (not disagreed):
        out.append(f"the result says passed={result.passed}, the steps say otherwise")
    if result.disagreed_steps != disagreed or result.disagreed != len(disagreed):
        out.append(f"the result's disagreed steps {result.disagreed_steps} are not {disagreed}")
    if result.agreed != len(record.steps) - len(disagreed):
        out.append(f"the result counts {result.agreed} agreed steps")
    return out


def _spelled(source: str, spelling: str) -> str | None:
    table = TABLES.get(source)
    if table is not None:
        state = table.get(spelling)
        return state.name if state is not None else None
    return spelling if spelling in TcpState.__members__ else None


def _observations(record: RunRecord) -> list[str]:
    """Each observed state is the one its sources' own spellings name."""
    out = []
    for step in record.steps:
        for side, obs in step.observed.items():
            if obs.side != side:
                out.append(f"step {step.id}: observation {obs.side!r} filed under {side!r}")
            named = {
                source: _spelled(source, spelling)
                for source, spelling in obs.sources.items()
                if spelling is not None
            }
            if any(state is None for state in named.values()):
                out.append(f"step {step.id}: {side}: a source spelling no source uses")
                continue
            states = {state for state in named.values() if state is not None}
            seen_by_all = all(spelling is not None for spelling in obs.sources.values())
            agree = len(states) <= 1 and (seen_by_all or not states)
            if obs.agree != agree:
                out.append(
                    f"step {step.id}: {side}: agree={obs.agree}, but its sources say "
                    f"{dict(obs.sources)}"
                )
            elif obs.agree and states and obs.state not in states:
                spelled = ", ".join(f"{k} {v!r}" for k, v in obs.sources.items())
                out.append(f"step {step.id}: {side} is {obs.state} but its sources say {spelled}")
            elif not states and obs.state != ABSENT and obs.sources:
                out.append(f"step {step.id}: {side} is {obs.state} but no source saw it")
    return out


def _timings(record: RunRecord) -> list[str]:
    out = []
    result = record.result
    assert result is not None
    last = -1.0
    for step in record.steps:
        if step.observed_ms is not None:
            if step.observed_ms <= last:
                out.append(
                    f"step {step.id}: observed at {step.observed_ms} ms, before step "
                    f"{step.index - 1} ({last} ms)"
                )
            last = step.observed_ms
    settle = round(sum(s.settle_ms for s in record.steps) / 1000, 3)
    if abs(settle - result.settle_s) > 0.0015:
        out.append(f"settle_s {result.settle_s} is not the steps' sum {settle}")
    total_ms = result.duration_s * 1000
    if last > total_ms + TIME_SLACK_MS:
        out.append(f"a step observed at {last} ms, after the run's end ({total_ms:.0f} ms)")
    spent = sum(s.action_ms + s.settle_ms for s in record.steps)
    if spent > total_ms + TIME_SLACK_MS:
        out.append(f"the steps took {spent:.0f} ms, more than the run's {total_ms:.0f} ms")
    moments = [float(s["t_ms"]) for s in record.segments()]
    if any(b < a - TIME_SLACK_MS for a, b in itertools.pairwise(moments)):
        out.append("the captured segments go back in time")
    times = moments + [float(t["t_ms"]) for t in record.transitions()]
    if times and max(times) > total_ms + TIME_SLACK_MS:
        out.append(f"evidence at {max(times)} ms, after the run's end ({total_ms:.0f} ms)")
    return out


def _kernel(record: RunRecord) -> list[str]:
    lab = record.started
    versions = lab.versions
    out = []
    if not KERNEL_RELEASE.match(versions.get("kernel", "")):
        out.append(f"kernel version {versions.get('kernel')!r} is not a kernel release")
    loop = versions.get("loop", "")
    if loop.split(" ", 1)[0] != lab.loop:
        out.append(f"the loop version {loop!r} is not the {lab.loop} loop that ran")
    if lab.loop == "asyncio" and versions.get("python", "?") not in loop:
        out.append(f"asyncio {loop!r} is not python {versions.get('python')!r}")
    return out


def _label(seg: Mapping[str, Any]) -> str:
    parts = [str(seg["flags"]) or "<none>", f"seq={seg['rel_seq']}"]
    if seg["rel_ack"] is not None:
        parts.append(f"ack={seg['rel_ack']}")
    if seg["len"]:
        parts.append(f"len={seg['len']}")
    return " ".join(parts)


def _flags(seg: Mapping[str, Any]) -> set[str]:
    return set(str(seg["flags"]).split(",")) - {""}


def _conversations(record: RunRecord) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    """Each conversation's segments, with the index of the step that reported each."""
    convs: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for step in record.steps:
        for seg in step.segments:
            if isinstance(seg.get("conv"), int):
                convs.setdefault(seg["conv"], []).append((step.index, seg))
    return convs


def _segments(record: RunRecord) -> list[str]:
    """The seq/ack arithmetic of every conversation holds together."""
    out: list[str] = []
    for conv, items in _conversations(record).items():
        segs = [seg for _, seg in items]
        first = segs[0]
        if first["sender"] is None:
            continue
        client = first["src"] if first["sender"] == "client" else first["dst"]
        server = first["dst"] if first["sender"] == "client" else first["src"]
        base: dict[str, int] = {}
        isn_seen: set[str] = set()
        for seg in segs:
            flags = _flags(seg)
            end = seg["sender"]
            if (seg["src"], seg["dst"]) != (
                (client, server) if end == "client" else (server, client)
            ):
                out.append(
                    f"conversation {conv}: a segment {seg['src']}>{seg['dst']} "
                    f"is not from its {end}"
                )
                break
            if seg["rel_seq"] is None:
                continue
            if seg["label"] != _label(seg):
                out.append(f"conversation {conv}: label {seg['label']!r} is not {_label(seg)!r}")
                break
            if "SYN" in flags:
                isn_seen.add(end)
            b = (seg["seq"] - seg["rel_seq"]) % SEQ_SPACE
            if base.setdefault(end, b) != b:
                out.append(
                    f"conversation {conv}: {end} seq={seg['seq']} is not its ISN "
                    f"{base[end]} + rel {seg['rel_seq']}"
                )
                break
            if ("ACK" in flags) != (seg["rel_ack"] is not None):
                out.append(f"conversation {conv}: rel_ack where the ACK flag says otherwise")
                break
        else:
            out += _acks(conv, segs, base, isn_seen)
    return out


def _acks(
    conv: int, segs: Sequence[Mapping[str, Any]], base: Mapping[str, int], isn_seen: set[str]
) -> list[str]:
    """Relative acks use the peer's ISN, no end acknowledges bytes not yet sent, and no end
    skips sequence numbers (each sends from where it left off, or retransmits)."""
    sent: dict[str, int] = {}
    for seg in segs:
        if seg.get("forged"):
            continue  # sent by the lab's raw socket, not by that end: any number goes
        end = seg["sender"]
        peer = "server" if end == "client" else "client"
        flags = _flags(seg)
        if seg["rel_ack"] is not None and peer in base:
            if (seg["ack"] - seg["rel_ack"]) % SEQ_SPACE != base[peer]:
                return [
                    f"conversation {conv}: {end} ack={seg['ack']} is not the {peer}'s "
                    f"ISN {base[peer]} + rel {seg['rel_ack']}"
                ]
            if peer in isn_seen and seg["rel_ack"] > sent.get(peer, 0):
                return [
                    f"conversation {conv}: {end} acknowledges {peer} byte "
                    f"{seg['rel_ack']} before the {peer} sent it"
                ]
        if seg["rel_seq"] is not None:
            if end in isn_seen and "SYN" not in flags and seg["rel_seq"] > sent.get(end, 0):
                return [
                    f"conversation {conv}: {end} seq={seg['seq']} (rel {seg['rel_seq']}) "
                    f"skips bytes it never sent (next was rel {sent.get(end, 0)})"
                ]
            end_seq = seg["rel_seq"] + seg["len"] + ("SYN" in flags) + ("FIN" in flags)
            sent[end] = max(sent.get(end, 0), end_seq)
    return []


def _wire_bookkeeping(record: RunRecord) -> list[str]:
    """Conversations numbered in order of first appearance, a reused 4-tuple's new
    conversation opened by a SYN, every drop marked with a hold of its step and within that
    hold's counter."""
    out: list[str] = []
    order: list[int] = []
    tuples: dict[frozenset[str], int] = {}
    for step in record.steps:
        marked: dict[str, int] = {}
        for seg in step.segments:
            conv, ends = seg["conv"], frozenset((seg["src"], seg["dst"]))
            if isinstance(conv, int) and conv not in order:
                if conv != len(order):
                    out.append(f"step {step.id}: conversation {conv} where {len(order)} was next")
                    return out
                if ends in tuples and "SYN" not in _flags(seg):
                    out.append(
                        f"step {step.id}: conversation {conv} reuses conversation "
                        f"{tuples[ends]}'s addresses without a SYN"
                    )
                order.append(conv)
                tuples[ends] = conv
            hold = seg["hold"]
            if seg["dropped"] != (hold is not None):
                out.append(f"step {step.id}: a segment dropped={seg['dropped']} by hold {hold}")
            elif hold is not None:
                if hold not in step.holds:
                    out.append(f"step {step.id}: a segment dropped by {hold}, no hold of the step")
                else:
                    marked[hold] = marked.get(hold, 0) + 1
        for hold, count in marked.items():
            counter = step.holds[hold].get("dropped")
            if not isinstance(counter, int) or count > counter:
                out.append(
                    f"step {step.id}: {count} drops marked for {hold}, its counter {counter}"
                )
    return out


def _checks(record: RunRecord) -> list[str]:
    """The wire checks' numbers are numbers the capture holds: a segment's seq or ack, or the
    sequence number of a FIN that rides on data (seq + len: the FIN follows the data)."""
    result = record.result
    assert result is not None
    segments = record.segments()
    numbers = {str(seg[k]) for seg in segments for k in ("seq", "ack", "rel_seq", "rel_ack")}
    for seg in segments:
        if "FIN" in str(seg["flags"]).split(","):
            length = int(str(seg["len"]))
            numbers.add(str((int(str(seg["seq"])) + length) % 2**32))
            numbers.add(str(int(str(seg["rel_seq"])) + length))
    out = []
    for check in result.checks:
        missing = [n for n in BIG_NUMBER.findall(str(check["detail"])) if n not in numbers]
        if missing:
            out.append(f"check {check['name']} cites {missing[0]}, which no segment carries")
    return out


def _same(a: str, b: str) -> bool:
    return a == b or (a in GONE and b in GONE)


def _timeline(record: RunRecord) -> list[str]:
    """At each step, a socket's last transition by the table read has the state read."""
    out: list[str] = []
    transitions: list[dict[str, Any]] = []
    for step in record.steps:
        transitions += step.transitions
        when = step.observed_ms
        if when is None:
            continue
        for side, obs in step.observed.items():
            if obs.local is None:
                continue
            moves = [
                t
                for t in transitions
                if (t["local"], t["remote"]) == (obs.local, obs.remote) and t["t_ms"] <= when
            ]
            if moves and not _same(str(moves[-1]["new"]), obs.state):
                out.append(
                    f"step {step.id}: {side} is {obs.state}, but its last transition "
                    f"is to {moves[-1]['new']}"
                )
    return out


def _fins(record: RunRecord) -> list[str]:
    """States that need a FIN on the wire have one, from this conversation, by this step."""
    if not record.segments():
        return []
    convs = _conversations(record)
    out: list[str] = []
    for step in record.steps:
        for side, obs in step.observed.items():
            if obs.local is None or obs.remote is None:
                continue
            mine = [
                items
                for items in convs.values()
                if {items[0][1]["src"], items[0][1]["dst"]} == {obs.local, obs.remote}
                and items[0][0] <= step.index
            ]
            if not mine:
                continue
            items = [(i, s) for i, s in mine[-1] if i <= step.index]
            sent = any(s["src"] == obs.local and "FIN" in _flags(s) for _, s in items)
            got = any(
                s["dst"] == obs.local and "FIN" in _flags(s) and not s.get("dropped")
                for _, s in items
            )
            if obs.state in SENT_FIN and not sent:
                out.append(f"step {step.id}: {side} is {obs.state}, but it sent no FIN")
            elif obs.state in GOT_FIN and not got:
                out.append(f"step {step.id}: {side} is {obs.state}, but no FIN reached it")
            elif obs.state == "ESTABLISHED" and any(
                i < step.index and "FIN" in _flags(s) for i, s in items
            ):
                out.append(f"step {step.id}: {side} is ESTABLISHED after a FIN crossed")
    return out


def _regrade(entry: Mapping[str, Any]) -> bool | None:
    """The grade a quiz entry's answer earns against its truth, as ``lab.quiz`` grades."""
    key, answer, truth = entry["key"], entry["answer"], entry["truth"]
    if key == "outcome":
        return answer is not None and answer.strip() == (truth or "")
    if key == "ack":
        if truth is None:
            return None
        names = {k: int(v) for k, v in QUESTION_NAME.findall(str(entry["question"]))}
        got = None if answer is None else evaluate(answer, names)
        return str(truth).isdigit() and got == int(truth)
    return answer is not None and normalise_state_answer(answer) == truth


def _quiz(record: RunRecord) -> list[str]:
    out: list[str] = []
    acks = {str(seg["ack"]) for seg in record.segments()}
    asked = right = 0
    for step in record.steps:
        for entry in step.quiz:
            key, truth = entry["key"], entry["truth"]
            where = f"step {step.id}: quiz {key}"
            if key not in {"outcome", "ack"} and key not in step.expected:
                out.append(f"{where}: a question about a side the step does not expect")
                continue
            if key == "outcome":
                if truth != step.outcome:
                    out.append(f"{where}: truth {truth!r} is not the outcome {step.outcome!r}")
            elif key == "ack":
                if truth is not None and truth not in acks:
                    out.append(f"{where}: truth {truth} is no ack the capture holds")
            else:
                obs = step.observed.get(key)
                state = obs.state if obs is not None else ABSENT
                if truth != state:
                    out.append(f"{where}: truth {truth!r} is not the observed {state}")
            if entry["correct"] != _regrade(entry):
                out.append(
                    f"{where}: answer {entry['answer']!r} graded {entry['correct']}, "
                    f"it earns {_regrade(entry)}"
                )
            asked += entry["correct"] is not None
            right += entry["correct"] is True
    quiz = record.result.quiz if record.result is not None else None
    has_quiz = any(step.quiz for step in record.steps)
    if quiz is None:
        if has_quiz:
            out.append("the steps hold quiz answers, the result no score")
        return out
    score = round(100 * right / asked, 1) if asked else 100.0
    if (quiz["asked"], quiz["correct"]) != (asked, right) or abs(quiz["score"] - score) > 0.05:
        out.append(
            f"the score {quiz['correct']}/{quiz['asked']} ({quiz['score']}) is not "
            f"the answers' {right}/{asked} ({score})"
        )
    return out


def _answers(record: RunRecord, answers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The run's recorded answers are the answers file's."""
    if not any(step.quiz for step in record.steps):
        return ["an answers file, but the run has no quiz"]
    out = []
    for step in record.steps:
        given = answers.get(step.id, {})
        for entry in step.quiz:
            value = given.get(entry["key"])
            want = None if value is None else str(value)
            if entry["answer"] != want:
                out.append(
                    f"step {step.id}: the run answered {entry['key']} "
                    f"{entry['answer']!r}, the answers file says {want!r}"
                )
    return out


# -- the class ----------------------------------------------------------------------------


def grade_class(directory: Path) -> list[Graded]:
    """Every submission in ``directory``, graded, by student name, each with the other
    students who handed in the same run (``same_run_as``)."""
    graded = [grade_submission(sub) for sub in find_submissions(directory)]
    owners: dict[str, list[str]] = {}
    for g in graded:
        if g.fingerprint is not None:
            owners.setdefault(g.fingerprint, []).append(g.name)
    return [
        _with(g, same_run_as=tuple(n for n in owners[g.fingerprint] if n != g.name))
        if g.fingerprint is not None and len(owners[g.fingerprint]) > 1
        else g
        for g in graded
    ]


@dataclass(frozen=True, slots=True)
class WrongPrediction:
    """One wrong answer to one question, as many students gave it."""

    lab: str
    step: str
    key: str
    answer: str | None
    """As given (a state in its normalised spelling: ``fin-wait-2`` is FIN_WAIT2); None:
    left blank."""
    students: tuple[str, ...]
    truths: tuple[str, ...]
    """What the kernel or the wire said in those students' runs, each once."""
    question: str


def wrong_predictions(graded: Iterable[Graded]) -> list[WrongPrediction]:
    """The class's wrong predictions, grouped, most common first.

    Inconsistent and unreadable submissions are left out: their answers are not evidence."""
    groups: dict[tuple[str, str, str, str | None], list[tuple[str, dict[str, Any]]]] = {}
    for g in graded:
        if g.klass in {"unreadable", "inconsistent"} or g.lab is None:
            continue
        for step in g.steps:
            for entry in step.wrong:
                raw = entry.get("answer")
                answer = None if raw is None else str(raw).strip()
                if answer is not None and entry.get("key") not in {"outcome", "ack"}:
                    answer = normalise_state_answer(answer) or answer
                key = (g.lab, step.id, str(entry.get("key")), answer)
                groups.setdefault(key, []).append((g.name, entry))
    out = [
        WrongPrediction(
            lab=lab,
            step=step,
            key=key,
            answer=answer,
            students=tuple(name for name, _ in items),
            truths=tuple(dict.fromkeys(str(e.get("truth")) for _, e in items)),
            question=str(items[0][1].get("question", "")),
        )
        for (lab, step, key, answer), items in groups.items()
    ]
    return sorted(out, key=lambda w: (-len(w.students), w.lab, w.step, w.key, w.answer or ""))
