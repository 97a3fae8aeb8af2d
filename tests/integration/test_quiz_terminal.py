"""``run LAB --quiz`` on a real terminal: the questions, the hint and the grading speak the
run's language (the answers file path is tested in test_quiz_cli.py)."""

from __future__ import annotations

import pytest

from tests.integration.test_terminal_output import on_a_terminal


def _quiz_on_a_terminal(lang: str, answers: list[str]) -> tuple[int, str]:
    """The half-close quiz on a pseudo-terminal, each prompt answered in turn (the last
    answer repeats): the exit code and the whole transcript."""
    return on_a_terminal(
        ["run", "half-close", "--quiz", "--lang", lang], answers=answers, env={"NO_COLOR": "1"}
    )


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
