"""--quiz as students and graders use it: answers from a file or typed at a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from handshake_lab.errors import ExitStatus
from handshake_lab.spec.loader import find_lab

CLI = [sys.executable, "-m", "handshake_lab"]


def answers_from_lab(name: str, *, wrong_step: str | None = None) -> str:
    """A key written by someone who understood: states from the lab, numbers as rules."""
    lines = []
    for step in find_lab(name).steps:
        lines.append(f"[{step.id}]")
        for side, state in step.expect.items():
            answer = state.name if state is not None else "ABSENT"
            if step.id == wrong_step:
                answer = "CLOSING"
            lines.append(f'"{side}" = "{answer}"')
        if step.outcome not in (None, "ok"):
            lines.append(f'outcome = "{step.outcome}"')
        fin = "w" if step.actor == "server" else "u"  # the seed's names for the two FINs
        if step.action in {"close", "send_eof"}:
            lines.append(f'ack = "{fin}+1"')
        elif step.action == "send":
            lines.append('ack = "s+n"')
    return "\n".join(lines) + "\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_right_predictions_pass_and_the_json_summary_scores_them(tmp_path: Path) -> None:
    key = tmp_path / "answers.toml"
    key.write_text(answers_from_lab("half-close"))
    proc = run("run", "half-close", "--answers", str(key), "--json")
    assert proc.returncode == ExitStatus.OK, proc.stdout[-2000:] + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    result = events[-1]
    assert result["quiz"]["asked"] > 0
    assert result["quiz"]["correct"] == result["quiz"]["asked"]
    steps = [e for e in events if e["event"] == "step"]
    graded = [q for s in steps for q in s["quiz"]]
    # Questions name this run's real sockets.
    port = events[0]["ports"]["main"]
    assert any(f":{port}" in q["question"] for q in graded)


def test_one_wrong_prediction_exits_8_and_says_which(tmp_path: Path) -> None:
    key = tmp_path / "answers.toml"
    key.write_text(answers_from_lab("half-close", wrong_step="client-fin"))
    proc = run("run", "half-close", "--answers", str(key), "--json")
    assert proc.returncode == ExitStatus.QUIZ_WRONG
    steps = [json.loads(line) for line in proc.stdout.splitlines()[1:-1]]
    wrong = [(s["id"], q["key"]) for s in steps for q in s["quiz"] if q["correct"] is False]
    assert wrong == [("client-fin", "client"), ("client-fin", "server")]


def test_quiz_without_a_terminal_or_answers_is_a_usage_error() -> None:
    proc = run("run", "half-close", "--quiz")
    assert proc.returncode == ExitStatus.USAGE
    assert "--answers" in proc.stderr


def test_a_student_answers_at_a_terminal(tmp_path: Path) -> None:
    """A real pseudo-terminal: the tool asks, we type, unknown spellings are asked again."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "run", "close-wait-leak", "--quiz", "--json"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
        env={**os.environ, "TERM": "dumb"},
    )
    os.close(slave)
    typed: list[str] = []
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            seen += chunk
            text = seen.decode(errors="replace")
            if text.rstrip().endswith("?"):
                # First answer a misspelling once: it must be asked again, not graded.
                answer = "SYN_SEND" if not typed else "ABSENT"
                if "which state" in text.splitlines()[-1] and len(typed) > 1:
                    answer = "CLOSE_WAIT" if "server" in text.splitlines()[-1] else "FIN_WAIT2"
                typed.append(answer)
                os.write(master, (answer + "\n").encode())
                seen = b""
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    events = [json.loads(line) for line in out.splitlines()]
    questions = [q for e in events if e["event"] == "step" for q in e["quiz"]]
    assert typed[0] == "SYN_SEND"
    # Every question was answered once, and the misspelling was asked again, not graded.
    assert len(typed) == len(questions) + 1
    assert all(q["answer"] != "SYN_SEND" for q in questions)
    assert events[-1]["quiz"]["asked"] > 0
    # The exit code follows the grade: 8 exactly when some answer was wrong, else 0.
    summary = events[-1]["quiz"]
    assert events[-1]["passed"] is True, events[-1]
    wrong = summary["correct"] < summary["asked"]
    assert proc.returncode == (ExitStatus.QUIZ_WRONG if wrong else ExitStatus.OK), summary


def fill_template(template: str, name: str, *, wrong: str | None = None) -> str:
    """What a student who understood writes into ``quiz template``'s blanks: states in the
    RFC and ss spellings, numbers as rules with spaces and capitals, outcomes in lower case."""
    spelling = {"SYN_RECV": "SYN-RECEIVED", "FIN_WAIT2": "FIN-WAIT-2", "CLOSE_WAIT": "close-wait"}
    steps = {step.id: step for step in find_lab(name).steps}
    out: list[str] = []
    current = None
    for line in template.splitlines():
        if line.startswith("["):
            current = steps[line.strip("[]")]
        elif line.endswith(' = ""') and current is not None:
            key = line.split(" = ")[0].strip('"')
            if key == "ack":
                fin = "W" if current.actor == "server" else "u"
                answer = f"{fin} + 1" if current.action != "send" else "s + n"
            elif key == "outcome":
                answer = str(current.outcome).lower()
            else:
                state = current.expect[key]
                answer = "ABSENT" if state is None else spelling.get(state.name, state.name)
            if wrong is not None and f"{current.id}.{key}" == wrong:
                answer = "LISTEN"
            out.append(f'"{key}" = "{answer}"')
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def test_a_filled_template_grades_right_wrong_and_unreadable(tmp_path: Path) -> None:
    template = run("quiz", "template", "half-close")
    assert template.returncode == ExitStatus.OK, template.stderr
    assert "# client: which state after this step?" in template.stdout
    answers = tmp_path / "answers.toml"
    answers.write_text(fill_template(template.stdout, "half-close"))
    proc = run("run", "half-close", "--answers", str(answers), "--json")
    assert proc.returncode == ExitStatus.OK, proc.stdout[-2000:] + proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["quiz"]["correct"] == result["quiz"]["asked"] > 0

    answers.write_text(fill_template(template.stdout, "half-close", wrong="client-fin.server"))
    proc = run("run", "half-close", "--answers", str(answers), "--json")
    assert proc.returncode == ExitStatus.QUIZ_WRONG, proc.stderr

    text = fill_template(template.stdout, "half-close").replace(
        '"client" = "FIN-WAIT-2"', '"client" = "FIN-WAIT-3"', 1
    )
    answers.write_text(text)
    line = text.splitlines().index('"client" = "FIN-WAIT-3"') + 1
    proc = run("run", "half-close", "--answers", str(answers), "--json")
    assert proc.returncode == ExitStatus.ANSWERS_INVALID
    assert proc.stdout == ""
    (error,) = proc.stderr.strip().splitlines()
    assert error.startswith(f"handshake-lab: {answers}:{line}: [client-fin] client: ")
    assert "'FIN-WAIT-3' is not a TCP state" in error


def test_the_template_speaks_the_chosen_language() -> None:
    proc = run("quiz", "template", "half-close", "--lang", "zh")
    assert proc.returncode == ExitStatus.OK
    assert "# client：这一步之后处于什么状态？" in proc.stdout
    assert run("quiz", "template", "no-such-lab").returncode == ExitStatus.LAB_NOT_FOUND
