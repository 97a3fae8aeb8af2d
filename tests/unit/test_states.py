"""The one parser for states a person types (explain, watch --state, quiz answers)."""

from __future__ import annotations

import pytest

from handshake_lab.lab.quiz import normalise_state_answer
from handshake_lab.tcp.states import TcpState, parse_state


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("FIN_WAIT2", TcpState.FIN_WAIT2),
        ("fin-wait-2", TcpState.FIN_WAIT2),
        ("FIN-WAIT-1", TcpState.FIN_WAIT1),
        ("ESTAB", TcpState.ESTABLISHED),
        ("syn received", TcpState.SYN_RECV),
        ("SYN-RECV", TcpState.SYN_RECV),
        ("CLOSED", TcpState.CLOSE),
        ("UNCONN", TcpState.CLOSE),
        (" time-wait ", TcpState.TIME_WAIT),
    ],
)
def test_every_common_spelling_parses(word: str, state: TcpState) -> None:
    assert parse_state(word) is state


@pytest.mark.parametrize("word", ["SYN_SEND", "SYN_RECVD", "", "ABSENT", "WAIT"])
def test_the_seeds_misspellings_and_non_states_do_not_parse(word: str) -> None:
    assert parse_state(word) is None


def test_every_rfc_name_parses_back_to_its_state() -> None:
    for state in TcpState:
        if state is not TcpState.NEW_SYN_RECV:  # the RFC has no name of its own for it
            assert parse_state(state.rfc_name) is state


def test_a_quiz_reads_closed_as_no_socket_and_otherwise_agrees_with_the_parser() -> None:
    assert normalise_state_answer("closed") == "ABSENT"
    assert normalise_state_answer("fin-wait-2") == "FIN_WAIT2"
    assert normalise_state_answer("SYN_SEND") is None
