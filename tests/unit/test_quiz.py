"""Quiz grading: answers are compared with what the kernel said, numbers may be expressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab.errors import AnswersInvalidError, ExitStatus
from handshake_lab.lab.quiz import Quiz, askable, evaluate, normalise_state_answer
from handshake_lab.spec.loader import find_lab
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


LAB = find_lab("half-close")


def answers_error(tmp_path: Path, text: str) -> AnswersInvalidError:
    path = tmp_path / "answers.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AnswersInvalidError) as info:
        Quiz.load_answers(path, LAB)
    assert info.value.exit_status is ExitStatus.ANSWERS_INVALID
    assert str(info.value).startswith(f"{path}:")
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[step\n", 1, "not valid TOML"),
        ("step = 1\n", 1, "no step 'step'"),
        ('[client-fin]\nclient = "FIN_WAIT2"\n\n[no-such-step]\nclient = "X"\n', 4, "no step"),
        ('[client-fin]\nclient = "FIN_WAIT2"\nghost = "LISTEN"\n', 3, "asks no such question"),
        ('[client-fin]\nclient = "FIN_WAIT3"\n', 2, "'FIN_WAIT3' is not a TCP state"),
        ("[client-fin]\nserver = 7\n", 2, "must be a string"),
        ('[client-fin]\nack = "x+1"\n', 2, "expression of u"),
        ('[client-fin]\nack = "u*2"\n', 2, "expression of u"),
        ('[listen]\nack = "u+1"\n', 2, "asks no such question"),
        ('[client-fin]\n\n\n"outcome" = "EOF"\n', 4, "asks no such question"),
        ('[server-sees-eof]\noutcome = "EOFF"\n', 2, "not an outcome"),
        ('[listen]\nlistener = "LISTEN"\nlistener = "X"\n', 3, "not valid TOML"),
    ],
)
def test_an_unreadable_answer_is_an_error_naming_the_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    error = answers_error(tmp_path, text)
    assert error.line == line, str(error)
    assert words in str(error)


def test_every_real_spelling_and_equivalent_expression_loads(tmp_path: Path) -> None:
    path = tmp_path / "answers.toml"
    path.write_text(
        "[client-fin]\n"
        'client = "fin-wait-2"\n'
        'server = " Close-Wait "\n'
        'ack = "U + 1"\n'
        "[server-close]\n"
        'ack = "w+1"\n'
        'client = "TIME-WAIT"\n'
        'server = ""\n',
        encoding="utf-8",
    )
    answers = Quiz.load_answers(path, LAB)
    assert answers["client-fin"]["ack"] == "U + 1"
    assert answers["server-close"]["server"] == ""


@pytest.mark.parametrize("text", ["w+1", "w + 1", "W+1", " W +1 ", "1+w"])
def test_equivalent_sequence_expressions_grade_alike(text: str) -> None:
    assert evaluate(text, {"w": 41}) == 42


@pytest.mark.parametrize("text", ["SYN-RECEIVED", "SYN-RECV", "syn_recv", "Syn Received"])
def test_rfc_and_ss_spellings_of_syn_recv_grade_alike(text: str) -> None:
    assert normalise_state_answer(text) == "SYN_RECV"


def test_what_the_runner_asks_is_always_askable() -> None:
    """The questions a run may ask (with numbers captured) are the ones a file may answer."""
    numbers = {"u": 1, "w": 2, "s": 3, "n": 4}
    for name in ("half-close", "close", "reset", "handshake", "port-reuse"):
        for item in find_lab(name).steps:
            fin = {k: v for k, v in numbers.items() if k in ("u", "w")}
            data = {"s": 3, "n": 4}
            keys = {a.key for a in askable(item)}
            for given in (fin, data, {}):
                run_keys = {q.key for q in Quiz().questions(item, {}, given)}
                if item.action in {"close", "send_eof", "send"} or not given:
                    assert run_keys <= keys, (name, item.id, run_keys, keys)


def test_answers_from_a_device_or_a_fifo_are_refused_not_read_forever(tmp_path: Path) -> None:
    import os  # noqa: PLC0415

    with pytest.raises(AnswersInvalidError, match="not a regular file"):
        Quiz.load_answers(Path("/dev/zero"), LAB)
    fifo = tmp_path / "answers.fifo"
    os.mkfifo(fifo)
    with pytest.raises(AnswersInvalidError, match="not a regular file"):
        Quiz.load_answers(fifo, LAB)
