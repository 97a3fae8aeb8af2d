"""``run LAB --quiz`` on a real terminal: the questions, the hint and the grading speak the
run's language (the answers file path is tested in test_quiz_cli.py)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

PROMPT_ENDS = ("? ", "？ ")


def _quiz_on_a_terminal(lang: str, answers: list[str]) -> tuple[int, str]:
    """Run the half-close quiz on a pseudo-terminal, answering each prompt in turn (the last
    answer repeats); the whole transcript and the exit code."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "handshake_lab", "run", "half-close", "--quiz", "--lang", lang],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
        close_fds=True,
    )
    os.close(slave)
    out = b""
    asked = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            out += chunk
            if out.decode(errors="replace").endswith(PROMPT_ENDS):
                os.write(master, (answers[min(asked, len(answers) - 1)] + "\n").encode())
                asked += 1
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, out.decode(errors="replace")


@pytest.mark.parametrize(
    ("lang", "predict", "hint", "graded", "total"),
    [
        ("en", "-- predict step 1:", "(a state name such as", "you said", "predictions right"),
        ("zh", "-- 预测第 1 步：", "（请填状态名", "你答", "个中答对"),
    ],
)
def test_the_quiz_asks_and_grades_in_the_runs_language(
    lang: str, predict: str, hint: str, graded: str, total: str
) -> None:
    # First answer is no state at all (asked again, with the hint); then always ESTABLISHED,
    # which the kernel contradicts at the half-close steps: exit 8, predictions wrong.
    rc, out = _quiz_on_a_terminal(lang, ["banana", "ESTABLISHED"])
    assert predict in out, out[-2000:]
    assert hint in out, out[-2000:]
    assert graded in out, out[-2000:]
    assert total in out, out[-2000:]
    assert rc == 8, out[-2000:]
    if lang == "zh":
        assert "which state" not in out
        assert "这一步之后处于什么状态？" in out
