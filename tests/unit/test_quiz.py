"""Quiz grading: answers are compared with what the kernel said, numbers may be expressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab.errors import LabInvalidError
from handshake_lab.lab.quiz import Quiz, evaluate, normalise_state_answer
from handshake_lab.spec.model import Step, Text
from handshake_lab.tcp.states import TcpState


def step(**kw: object) -> Step:
    base: dict[str, object] = {
        "index": 1,
        "id": "close-first",
        "actor": "client",
        "action": "close",
        "args": {},
        "expect": {"client": TcpState.FIN_WAIT2, "server": TcpState.CLOSE_WAIT},
        "explain": Text("x", "x"),
    }
    base.update(kw)
    return Step(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("FIN_WAIT2", "FIN_WAIT2"),
        ("fin-wait-2", "FIN_WAIT2"),
        ("FIN-WAIT-1", "FIN_WAIT1"),
        ("estab", "ESTABLISHED"),
        ("SYN-RECEIVED", "SYN_RECV"),
        ("closed", "ABSENT"),
        ("absent", "ABSENT"),
        ("SYN_SEND", None),  # the seed's misspelling is not a state
        ("", None),
    ],
)
def test_state_answers_accept_every_real_spelling_only(text: str, state: str | None) -> None:
    assert normalise_state_answer(text) == state


def test_numbers_may_be_integers_or_expressions_of_the_given_names() -> None:
    names = {"u": 4294967295, "s": 10, "n": 5}
    assert evaluate("u+1", names) == 0  # wraps modulo 2**32
    assert evaluate("s + n", names) == 15
    assert evaluate("15", names) == 15
    assert evaluate("x+1", names) is None
    assert evaluate("u*2", names) is None
    assert evaluate("__import__('os')", names) is None


def test_questions_name_the_real_sockets_and_the_real_sequence_number() -> None:
    quiz = Quiz()
    qs = quiz.questions(
        step(), {"client": "127.0.0.1:5000 > 127.0.0.1:6000"}, {"u": 1_694_696_942}
    )
    assert [q.key for q in qs] == ["client", "server", "ack"]
    assert "127.0.0.1:5000" in qs[0].text
    assert "seq=u=1694696942" in qs[2].text


def test_grading_uses_the_kernel_not_the_lab() -> None:
    quiz = Quiz({"close-first": {"client": "FIN-WAIT-2", "server": "LAST_ACK", "ack": "u+1"}})
    qs = quiz.questions(step(), {}, {"u": 100})
    assert quiz.prefilled(step(), qs)
    quiz.grade(qs, {"client": "FIN_WAIT2", "server": "CLOSE_WAIT"}, "ok", 101)
    assert [q.correct for q in qs] == [True, False, True]
    assert quiz.summary() == {"asked": 3, "correct": 2, "score": 66.7}


def test_a_copied_integer_fails_when_this_run_has_other_numbers() -> None:
    quiz = Quiz({"close-first": {"ack": "1694696943"}})
    qs = [q for q in quiz.questions(step(expect={}), {}, {"u": 77}) if q.key == "ack"]
    quiz.prefilled(step(expect={}), qs)
    quiz.grade(qs, {}, "ok", 78)
    assert qs[0].correct is False


def test_nothing_captured_means_the_number_is_not_graded() -> None:
    quiz = Quiz({"close-first": {"ack": "u+1"}})
    qs = [q for q in quiz.questions(step(expect={}), {}, {"u": 77})]
    quiz.prefilled(step(expect={}), qs)
    quiz.grade(qs, {}, "ok", None)
    assert qs[0].correct is None
    assert quiz.summary()["asked"] == 0


def test_ok_outcomes_are_not_asked_but_errnos_are() -> None:
    quiz = Quiz()
    assert [q.key for q in quiz.questions(step(expect={}, outcome="ok"), {}, {})] == []
    asked = quiz.questions(step(expect={}, outcome="ECONNREFUSED"), {}, {})
    assert [q.key for q in asked] == ["outcome"]


def test_answers_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "a.toml"
    bad.write_text("[step\n")
    with pytest.raises(LabInvalidError, match="not valid TOML"):
        Quiz.load_answers(bad)
    bad.write_text("step = 1\n")
    with pytest.raises(LabInvalidError, match="must be a table"):
        Quiz.load_answers(bad)


def test_answers_from_a_device_or_a_fifo_are_refused_not_read_forever(tmp_path: Path) -> None:
    import os  # noqa: PLC0415

    with pytest.raises(LabInvalidError, match="not a regular file"):
        Quiz.load_answers(Path("/dev/zero"))
    fifo = tmp_path / "answers.fifo"
    os.mkfifo(fifo)
    with pytest.raises(LabInvalidError, match="not a regular file"):
        Quiz.load_answers(fifo)
