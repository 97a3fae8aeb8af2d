"""``grade``'s checks on one real saved run, and its class-directory layout. No sockets.

``data/runs/half-close.quiz.jsonl`` is a real root run of the built-in half-close lab on
loopback, with capture, transitions and a quiz graded from ``half-close.answers.toml``. If
the half-close lab's steps change, regenerate it (``run half-close --answers ... --save``):
its steps must be the lab file's.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.errors import ClassDirError, ExitStatus
from handshake_lab.i18n.grading import GRADE_LABELS
from handshake_lab.lab.grading import (
    CLASSES,
    Submission,
    find_submissions,
    grade_class,
    grade_submission,
)
from handshake_lab.render.grade import COLUMNS, csv_text, html_page, json_doc

DATA = Path(__file__).parent / "data" / "runs"
RUN = DATA / "half-close.quiz.jsonl"
ANSWERS = DATA / "half-close.answers.toml"
ROOT = Path(__file__).resolve().parents[2]

Doc = dict[str, Any]


def docs() -> list[Doc]:
    return [json.loads(line) for line in RUN.read_text(encoding="utf-8").splitlines()]


def step(d: list[Doc], step_id: str) -> Doc:
    return next(x for x in d if x["event"] == "step" and x["id"] == step_id)


def graded(tmp_path: Path, d: list[Doc], answers: Path | None = None) -> tuple[str, str]:
    path = tmp_path / "student.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in d), encoding="utf-8")
    g = grade_submission(Submission("student", path, answers))
    return g.klass, "\n".join([g.reason, *g.problems])  # the first reason, then every one


def test_the_real_run_grades_ok_with_and_without_its_answers_file(tmp_path: Path) -> None:
    assert graded(tmp_path, docs(), ANSWERS)[0] == "ok"
    assert graded(tmp_path, docs())[0] == "ok"


def _seq(d: list[Doc]) -> None:
    fin = next(s for x in d if x["event"] == "step" for s in x["segments"] if "FIN" in s["flags"])
    fin["seq"] += 1


def _seq_everywhere(d: list[Doc]) -> None:
    # seq, rel_seq and label moved together: the FIN now skips a byte never sent.
    fin = next(s for x in d if x["event"] == "step" for s in x["segments"] if "FIN" in s["flags"])
    fin["seq"] += 1
    fin["rel_seq"] += 1
    fin["label"] = re.sub(r"seq=\d+", f"seq={fin['rel_seq']}", fin["label"])


def _ack(d: list[Doc]) -> None:
    seg = step(d, "connect")["segments"][2]
    seg["ack"] += 3
    seg["rel_ack"] += 3
    seg["label"] = re.sub(r"ack=\d+", f"ack={seg['rel_ack']}", seg["label"])


def _state(d: list[Doc]) -> None:
    step(d, "client-fin")["observed"]["client"]["state"] = "CLOSE_WAIT"


def _state_and_sources(d: list[Doc]) -> None:
    obs = step(d, "client-fin")["observed"]["client"]
    obs.update(state="ESTABLISHED", sources={"ss": "ESTAB", "psutil": "ESTABLISHED"})


def _state_sources_and_transitions(d: list[Doc]) -> None:
    obs = step(d, "server-sees-eof")["observed"]["client"]
    obs.update(state="ESTABLISHED", sources={"ss": "ESTAB", "psutil": "ESTABLISHED"})
    for x in d:
        if x["event"] == "step":
            x["transitions"] = []  # no transition stream left to contradict it...


def _answer(d: list[Doc]) -> None:
    step(d, "hello")["quiz"][0]["answer"] = "CLOSING"


def _truth(d: list[Doc]) -> None:
    q = step(d, "hello")["quiz"][0]
    q["truth"] = q["answer"] = "CLOSING"


def _verdict(d: list[Doc]) -> None:
    step(d, "hello")["agrees"] = False


def _clock(d: list[Doc]) -> None:
    step(d, "server-reads")["observed_ms"] = 1.0


def _kernel(d: list[Doc]) -> None:
    d[0]["versions"]["kernel"] = "a real kernel, honest"


def _field(d: list[Doc]) -> None:
    d[0]["graded_by"] = "me"


def _expect(d: list[Doc]) -> None:
    step(d, "hello")["expected"]["client"] = "CLOSING"


def _settle(d: list[Doc]) -> None:
    d[-1]["settle_s"] += 1


def _agree(d: list[Doc]) -> None:
    step(d, "hello")["observed"]["listener"]["agree"] = False


def _dropped(d: list[Doc]) -> None:
    step(d, "connect")["segments"][0]["dropped"] = True


def _quiz_key(d: list[Doc]) -> None:
    step(d, "hello")["quiz"][0]["key"] = "listener"


def _conv(d: list[Doc]) -> None:
    step(d, "hello")["segments"][0]["conv"] = 1


def _forged_rst(d: list[Doc], forged: bool) -> None:
    # A RST with the client's 4-tuple far ahead of anything the client sent: what a forge
    # step reports (marked) or what no kernel would send (unmarked).
    segs = step(d, "hello")["segments"]
    client = next(s for s in segs if s["sender"] == "client")
    rst = dict(client, flags="RST", len=0, ack=0, rel_ack=None)
    rst["seq"] = (client["seq"] + 1000) % 2**32
    rst["rel_seq"] = client["rel_seq"] + 1000
    rst["label"] = f"RST seq={rst['rel_seq']}"
    if forged:
        rst["forged"] = True
    segs.insert(segs.index(client) + 1, rst)


def test_a_forged_segment_is_no_end_skipping_bytes_but_unmarked_it_is(tmp_path: Path) -> None:
    marked, unmarked = copy.deepcopy(docs()), copy.deepcopy(docs())
    _forged_rst(marked, forged=True)
    _forged_rst(unmarked, forged=False)
    assert graded(tmp_path, marked)[0] == "ok"
    klass, why = graded(tmp_path, unmarked)
    assert klass == "inconsistent"
    assert "skips bytes it never sent" in why


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_seq, "is not its ISN"),
        (_seq_everywhere, "skips bytes it never sent"),
        (_ack, "before the server sent it"),
        (_state, "its sources say"),
        (_state_and_sources, "its last transition is to FIN_WAIT2"),
        (_state_sources_and_transitions, "after a FIN crossed"),
        (_answer, "graded True, it earns False"),
        (_truth, "is not the observed ESTABLISHED"),
        (_verdict, "agrees=False"),
        (_clock, "observed at 1.0 ms"),
        (_kernel, "is not a kernel release"),
        (_field, "not valid by the schema"),
        (_expect, "are not the lab's"),
        (_settle, "is not the steps' sum"),
        (_agree, "agree=False, but its sources say"),
        (_dropped, "dropped=True by hold None"),
        (_quiz_key, "a side the step does not expect"),
        (_conv, "reuses conversation 0's addresses without a SYN"),
    ],
)
def test_an_edited_run_is_inconsistent_with_the_reason(
    tmp_path: Path, edit: Callable[[list[Doc]], None], reason: str
) -> None:
    d = copy.deepcopy(docs())
    edit(d)
    klass, why = graded(tmp_path, d)
    assert klass == "inconsistent"
    assert reason in why


def test_a_run_that_differs_from_its_answers_file_is_inconsistent(tmp_path: Path) -> None:
    other = tmp_path / "other.answers.toml"
    other.write_text(ANSWERS.read_text().replace('"ESTABLISHED"', '"SYN_SENT"', 1))
    klass, why = graded(tmp_path, docs(), other)
    assert klass == "inconsistent"
    assert "the answers file says 'SYN_SENT'" in why


@pytest.mark.parametrize(
    ("cut", "klass", "reason"),
    [
        (lambda text: "\n".join(text.splitlines()[:4]) + "\n", "truncated", "after step 3 of 10"),
        (lambda text: text[: len(text) - 40], "truncated", "last line is cut off"),
        (lambda text: text.replace("}\n", "}}\n", 1), "unreadable", "line 1: not JSON"),
        (lambda text: "", "unreadable", "empty"),
        (lambda text: text.split("\n", 1)[1], "unreadable", "no lab event"),
    ],
)
def test_cut_and_broken_files(
    tmp_path: Path, cut: Callable[[str], str], klass: str, reason: str
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(cut(RUN.read_text(encoding="utf-8")), encoding="utf-8")
    g = grade_submission(Submission("s", path))
    assert (g.klass, reason in g.reason) == (klass, True), g.reason


def write_class(room: Path, names: list[str]) -> None:
    room.mkdir(exist_ok=True)
    for name in names:
        (room / name).write_bytes(RUN.read_bytes() if name.endswith(".jsonl") else b"")


def test_the_layout_is_name_jsonl_and_an_optional_answers_file(tmp_path: Path) -> None:
    write_class(tmp_path / "c", ["ann.jsonl", "ann.answers.toml", "bob.jsonl", ".DS_Store"])
    subs = find_submissions(tmp_path / "c")
    assert [(s.name, s.answers is not None) for s in subs] == [("ann", True), ("bob", False)]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["ann.jsonl", "notes.txt"], "notes.txt: not a submission"),
        (["ann.jsonl", "bob.answers.toml"], "bob.answers.toml: an answers file without its run"),
        (["ann.json"], "ann.json: not a submission"),
        ([], "no submissions"),
    ],
)
def test_any_other_layout_is_refused_naming_the_file(
    tmp_path: Path, names: list[str], message: str
) -> None:
    write_class(tmp_path / "c", names)
    with pytest.raises(ClassDirError) as caught:
        find_submissions(tmp_path / "c")
    assert message in str(caught.value)
    assert caught.value.exit_status is ExitStatus.CLASS_DIR_INVALID


def test_a_subdirectory_per_student_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c" / "ann").mkdir(parents=True)
    with pytest.raises(ClassDirError, match=r"c/ann: a directory"):
        find_submissions(tmp_path / "c")


def test_copies_are_named_and_the_csv_has_a_stable_header(tmp_path: Path) -> None:
    write_class(tmp_path / "c", ["ann.jsonl", "bob.jsonl"])
    class_ = grade_class(tmp_path / "c")
    assert [g.same_run_as for g in class_] == [("bob",), ("ann",)]
    header = csv_text(class_).splitlines()[0].split(",")
    assert tuple(header[: len(COLUMNS)]) == COLUMNS
    assert header[len(COLUMNS)] == "half-close:listen"
    doc = json_doc(class_, "c")
    assert doc["classes"]["ok"] == 2
    assert doc["students"][0]["steps"]["half-close:listen"] is True


def exit_rows(text: str) -> set[int]:
    return {int(m) for m in re.findall(r"^\| (\d+) \|", text, re.MULTILINE)}


def test_every_exit_code_is_in_both_exit_code_tables() -> None:
    codes = {int(status) for status in ExitStatus}
    assert exit_rows((ROOT / "README.md").read_text(encoding="utf-8")) >= codes
    assert exit_rows((ROOT / "docs" / "labs.md").read_text(encoding="utf-8")) >= codes


def test_the_page_has_every_word_in_both_languages() -> None:
    assert set(GRADE_LABELS["en"]) == set(GRADE_LABELS["zh"])
    assert {f"class.{klass}" for klass in CLASSES} <= set(GRADE_LABELS["en"])


def test_the_page_is_one_file_that_fetches_nothing(tmp_path: Path) -> None:
    write_class(tmp_path / "c", ["ann.jsonl", "bob.jsonl"])
    page = html_page(grade_class(tmp_path / "c"), "c", "zh")
    assert "default-src 'none'" in page
    for fetch in ("src=", "href=", "url(", "@import", "<script"):
        assert fetch not in page
    assert "班级成绩" in page


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, (*path, i))]
    return [(path, node)]


@pytest.mark.parametrize("seed", range(4))
def test_random_edits_never_crash_the_grader(tmp_path: Path, seed: int) -> None:
    """Any value of a real run changed to another of a plausible kind: the grader classes the
    file (most edits are caught; texts, pids and windows are unverifiable) and never raises."""
    rng = random.Random(seed)
    base = docs()
    leaves = [(i, path, value) for i, d in enumerate(base) for path, value in _leaves(d)]
    classes: set[str] = set()
    for _ in range(100):
        d = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            i, path, value = rng.choice(leaves)
            node: Any = d[i]
            for key in path[:-1]:
                node = node[key]
            if isinstance(value, bool):
                new: Any = not value
            elif isinstance(value, int):
                new = value + rng.choice([-1, 1, 1000, -value])
            elif isinstance(value, float):
                new = value * rng.choice([0, 0.5, 2, -1])
            elif isinstance(value, str):
                new = rng.choice(["", value + "x", "ABSENT", "CLOSE", "127.0.0.1:1", "SYN", "1"])
            else:
                new = rng.choice([0, "x", None])
            node[path[-1]] = new
        klass, _ = graded(tmp_path, d)
        classes.add(klass)
    assert "inconsistent" in classes
    assert classes <= set(CLASSES)
