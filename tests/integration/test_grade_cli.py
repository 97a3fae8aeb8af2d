"""``handshake-lab grade DIR`` on a class of 30 submissions made from real runs.

A few real runs of half-close and close (loopback, ``--answers``, ``--save``: right answers,
wrong answers, and a lab variant the kernel disagrees with) are copied and mutated into a class
as students hand them in: complete runs, wrong predictions, cut-off runs, runs edited by hand (a
state, a seq number, an answer, a score, a verdict, a step removed), and files that are no run.
The grade must class every one as expected, with its reason, and write the CSV and the page;
the page opens in a real headless Chromium without a console error.

Root: the capture (segments with their seq/ack numbers, which an edited seq contradicts) needs
it on loopback; CI runs as root.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.render.grade import COLUMNS
from handshake_lab.spec.loader import builtin_dir, find_lab
from tests.browser import chromium, console_problems
from tests.integration.test_cli import cli, one_error_line
from tests.integration.test_quiz_cli import answers_from_lab

Doc = dict[str, Any]
LABS = ("half-close", "close")


def docs_of(path: Path) -> list[Doc]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_docs(path: Path, docs: list[Doc], tail: str = "") -> None:
    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    path.write_text(text + tail, encoding="utf-8")


def steps_of(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["event"] == "step"]


def step_named(docs: list[Doc], step_id: str) -> Doc:
    return next(d for d in steps_of(docs) if d["id"] == step_id)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path | None]]:
    """Seven real loopback runs, saved: right and wrong answers of each lab, and a run the
    kernel disagrees with (half-close with one expectation changed)."""
    if os.geteuid() != 0:
        pytest.skip("the loopback capture (segments, seq numbers) needs root")
    where = tmp_path_factory.mktemp("runs")
    runs: dict[str, tuple[Path, Path | None]] = {}
    wrong_steps = {"half-close": ("hello", "client-fin"), "close": ("connect", "client-close")}
    for lab in LABS:
        variants: dict[str, str | None] = {"right": None}
        variants |= {f"wrong{i}": step for i, step in enumerate(wrong_steps[lab], start=1)}
        for variant, wrong_step in variants.items():
            key = where / f"{lab}.{variant}.toml"
            key.write_text(answers_from_lab(lab, wrong_step=wrong_step), encoding="utf-8")
            saved = where / f"{lab}.{variant}.jsonl"
            proc = cli("run", lab, "--answers", str(key), "--save", str(saved))
            want = ExitStatus.OK if wrong_step is None else ExitStatus.QUIZ_WRONG
            assert proc.returncode == want, proc.stderr
            runs[f"{lab}.{variant}"] = (saved, key)
    variant_lab = where / "half-close-variant.toml"
    text = (builtin_dir() / "half-close.toml").read_text(encoding="utf-8")
    changed = 'expect = { server = "ABSENT", client = "TIME_WAIT" }'
    assert changed in text
    variant_lab.write_text(
        text.replace(changed, 'expect = { server = "ABSENT", client = "FIN_WAIT2" }', 1).replace(
            '[[step]]\nid = "server-close"', '[[step]]\nid = "server-close"\ntimeout = 1', 1
        ),
        encoding="utf-8",
    )
    saved = where / "variant.jsonl"
    proc = cli("run", str(variant_lab), "--save", str(saved), timeout=120)
    assert proc.returncode == ExitStatus.KERNEL_DISAGREED, proc.stderr
    runs["variant"] = (saved, None)
    for path, _ in runs.values():
        assert any(steps_of(docs_of(path))[1]["segments"]), "no capture: not root?"
    return runs


def edit_state(docs: list[Doc]) -> None:
    """A hand edit: the client's state after its FIN, sources and all, back to ESTABLISHED."""
    step = step_named(docs, "client-fin" if docs[0]["name"] == "half-close" else "client-close")
    obs = step["observed"]["client"]
    obs["state"] = "ESTABLISHED"
    obs["sources"] = {"ss": "ESTAB", "psutil": "ESTABLISHED"}


def edit_seq(docs: list[Doc]) -> None:
    """A hand edit: the client's FIN carries another sequence number."""
    fin = next(s for d in steps_of(docs) for s in d["segments"] if "FIN" in s["flags"])
    fin["seq"] = (fin["seq"] + 1000) % 2**32


def edit_answer(docs: list[Doc]) -> None:
    """A wrong prediction turned right, its grade and the score fixed to match: only the
    answers file handed in with it tells."""
    for step in steps_of(docs):
        for q in step["quiz"]:
            if q["correct"] is False:
                q["answer"], q["correct"] = q["truth"], True
    quiz = docs[-1]["quiz"]
    quiz["correct"], quiz["score"] = quiz["asked"], 100.0


def edit_score(docs: list[Doc]) -> None:
    docs[-1]["quiz"]["correct"] = docs[-1]["quiz"]["asked"]
    docs[-1]["quiz"]["score"] = 100.0


def drop_step(docs: list[Doc]) -> None:
    del docs[3]
    for number, step in enumerate(steps_of(docs), start=1):
        step["index"] = number


def edit_verdict(docs: list[Doc]) -> None:
    docs[-1]["passed"] = True


def cut(lines: int) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        del docs[lines:]

    return edit


Mutation = Callable[[list[Doc]], None] | str | None
CLASS: list[tuple[str, str, Mutation, bool, str]] = [
    # student, run, mutation, hand in the answers file, expected class
    ("ada", "half-close.right", None, True, "ok"),
    ("ben", "half-close.right", None, False, "ok"),
    ("cai", "half-close.right", None, True, "ok"),
    ("dan", "close.right", None, True, "ok"),
    ("eve", "close.right", None, False, "ok"),
    ("fay", "close.right", None, True, "ok"),
    ("gus", "half-close.right", None, False, "ok"),
    ("hal", "half-close.wrong1", None, True, "wrong-predictions"),
    ("ida", "half-close.wrong1", None, False, "wrong-predictions"),
    ("jon", "half-close.wrong2", None, True, "wrong-predictions"),
    ("kim", "close.wrong1", None, True, "wrong-predictions"),
    ("lea", "close.wrong1", None, False, "wrong-predictions"),
    ("max", "close.wrong2", None, True, "wrong-predictions"),
    ("ned", "variant", None, False, "kernel-disagreed"),
    ("ora", "variant", None, False, "kernel-disagreed"),
    ("pam", "half-close.right", cut(5), True, "truncated"),
    ("quy", "close.right", cut(4), False, "truncated"),
    ("rex", "close.right", cut(-1), True, "truncated"),
    ("sam", "half-close.wrong1", "cut-line", False, "truncated"),
    ("tia", "half-close.right", edit_state, False, "inconsistent"),
    ("uma", "close.right", edit_state, True, "inconsistent"),
    ("vic", "half-close.right", edit_seq, False, "inconsistent"),
    ("wen", "close.right", edit_seq, False, "inconsistent"),
    ("xia", "half-close.wrong2", edit_answer, True, "inconsistent"),
    ("yan", "close.wrong2", edit_score, False, "inconsistent"),
    ("zed", "close.right", drop_step, False, "inconsistent"),
    ("abe", "variant", edit_verdict, False, "inconsistent"),
    ("bea", "garbage", None, False, "unreadable"),
    ("cyd", "not-a-run", None, False, "unreadable"),
    ("dee", "empty", None, False, "unreadable"),
]
EXPECTED_REASON = {
    "tia": "is ESTABLISHED, but its last transition is to FIN_WAIT2",
    "uma": "is ESTABLISHED, but its last transition is to FIN_WAIT2",
    "vic": "seq=",
    "wen": "seq=",
    "xia": "the answers file says",
    "yan": "score",
    "zed": "8 steps where the lab event announced 9",
    "abe": "passed=True",
    "bea": "not UTF-8",
    "cyd": "no lab event",
    "dee": "empty",
    "sam": "cut off",
}


@pytest.fixture(scope="module")
def classroom(
    real_runs: dict[str, tuple[Path, Path | None]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The 30 students' submissions, in the documented layout."""
    room = tmp_path_factory.mktemp("class")
    for student, run, mutation, with_answers, _ in CLASS:
        target = room / f"{student}.jsonl"
        if run == "garbage":
            target.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe not a run")
            continue
        if run == "not-a-run":
            target.write_text('{"name": "alice", "score": 100}\n', encoding="utf-8")
            continue
        if run == "empty":
            target.write_text("", encoding="utf-8")
            continue
        saved, key = real_runs[run]
        docs = copy.deepcopy(docs_of(saved))
        if mutation == "cut-line":
            write_docs(target, docs[:-1], json.dumps(docs[-1])[:30])
        else:
            if callable(mutation):
                mutation(docs)
            write_docs(target, docs)
        if with_answers and key is not None:
            (room / f"{student}.answers.toml").write_bytes(key.read_bytes())
    assert len(list(room.glob("*.jsonl"))) == 30
    return room


def grade(*args: str) -> subprocess.CompletedProcess[str]:
    return cli("grade", *args, timeout=120)


@pytest.mark.root
def test_grade_classes_thirty_submissions_and_writes_the_csv_and_the_page(
    classroom: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = grade(str(classroom), "-o", str(out))
    assert proc.returncode == ExitStatus.OK, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 31  # one per student, then the class
    assert lines[-1].startswith("30 submissions: 7 ok, 6 wrong predictions, 2 kernel disagreed")
    with (out / "grades.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = {row["student"]: row for row in reader}
    assert header is not None
    assert tuple(header[: len(COLUMNS)]) == COLUMNS
    steps = [f"{lab}:{s.id}" for lab in sorted(LABS) for s in find_lab(lab).steps]
    assert header[len(COLUMNS) :] == steps  # a column per step, labs by name, file order
    assert sorted(rows) == sorted(student for student, *_ in CLASS)
    for student, _, _, _, klass in CLASS:
        assert rows[student]["class"] == klass, (student, rows[student]["reason"])
        if student in EXPECTED_REASON:
            assert EXPECTED_REASON[student] in rows[student]["reason"], rows[student]
    # Scores and step columns, as the runs said.
    assert rows["ada"]["score"] == "100.0"
    assert float(rows["hal"]["score"]) < 100
    assert rows["hal"]["half-close:hello"] == "0"
    assert rows["hal"]["half-close:listen"] == "1"
    assert rows["ned"]["half-close:server-close"] == "0"
    assert rows["pam"]["half-close:listen"] == "1"
    assert rows["pam"]["half-close:client-sees-eof"] == ""  # never reached
    assert rows["tia"]["score"] == ""  # an edited run's score is not trusted
    assert rows["ada"]["close:listen"] == ""  # another lab's column
    # The same run handed in twice is named.
    assert "ben" in rows["ada"]["same_run_as"].split()
    assert rows["ned"]["same_run_as"] == "abe ora"  # abe edited the same run
    page = (out / "grades.html").read_text(encoding="utf-8")
    for absent in ("http://", "https://", "<script"):
        assert absent not in page
    for present in ("half-close", "client-fin", "CLOSING"):
        assert present in page


@pytest.mark.root
def test_grade_json_gives_an_lms_every_student_and_the_wrong_predictions(
    classroom: Path, tmp_path: Path
) -> None:
    proc = grade(str(classroom), "-o", str(tmp_path), "--json")
    assert proc.returncode == ExitStatus.OK, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1
    assert doc["classes"]["ok"] == 7
    assert doc["classes"]["inconsistent"] == 8
    students = {s["student"]: s for s in doc["students"]}
    assert students["hal"]["quiz"]["correct"] < students["hal"]["quiz"]["asked"]
    assert students["hal"]["steps"]["half-close:hello"] is False
    assert students["xia"]["problems"]
    wrong = doc["wrong_predictions"]
    # hal, ida and the truncated sam predicted CLOSING at half-close's hello: the top group.
    top = wrong[0]
    assert (top["lab"], top["step"], top["answer"]) == ("half-close", "hello", "CLOSING")
    assert sorted(top["students"]) == ["hal", "ida", "sam"]
    assert top["truths"] == ["ESTABLISHED"]


@pytest.mark.root
def test_the_grade_page_opens_in_headless_chromium_without_console_errors(
    classroom: Path, tmp_path: Path
) -> None:
    proc = grade(str(classroom), "-o", str(tmp_path), "--lang", "zh")
    assert proc.returncode == ExitStatus.OK, proc.stderr
    page = tmp_path / "grades.html"
    with chromium() as driver:
        driver.get(page.as_uri())
        assert "班级成绩" in driver.title
        body = driver.find_element("tag name", "body").text
        rows = driver.find_elements("css selector", "section table tbody tr")
        problems = console_problems(driver)
    assert problems == []
    assert "最常见的错误预测" in body
    assert len(rows) > len(find_lab("half-close").steps)
    # The explanation a wrong prediction needs is the lab's own text, as the students' runs
    # hold it (they ran in English; the page's own words are Chinese).
    hello = next(s for s in find_lab("half-close").steps if s.id == "hello")
    assert hello.explain.en.split("\n")[0] in body


def test_an_unusable_class_directory_is_one_line_and_its_own_exit_code(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = grade(str(missing), "-o", str(tmp_path / "out"))
    assert proc.returncode == ExitStatus.CLASS_DIR_INVALID
    assert str(missing) in one_error_line(proc)
    room = tmp_path / "room"
    room.mkdir()
    (room / "ann.jsonl").write_text("{}\n", encoding="utf-8")
    (room / "notes.txt").write_text("x", encoding="utf-8")
    proc = grade(str(room), "-o", str(tmp_path / "out"))
    assert proc.returncode == ExitStatus.CLASS_DIR_INVALID
    assert f"{room / 'notes.txt'}: not a submission" in one_error_line(proc)
    assert not (tmp_path / "out").exists()  # nothing written for an unusable directory
