"""Which segment caused a transition is decided with the state machine's table."""

from __future__ import annotations

from handshake_lab.lab.evidence import segment_causes
from handshake_lab.tcp.segments import Flags
from handshake_lab.tcp.states import TcpState as S


def test_application_calls_cause_no_segment() -> None:
    assert segment_causes(S.ESTABLISHED, S.FIN_WAIT1) == []
    assert segment_causes(S.CLOSE, S.SYN_SENT) == []
    assert segment_causes(S.CLOSE_WAIT, S.LAST_ACK) == []


def test_only_segments_with_the_right_flags_can_cause_a_transition() -> None:
    tests = segment_causes(S.FIN_WAIT1, S.CLOSING)
    assert tests
    assert any(t(Flags.FIN | Flags.ACK) for t in tests)
    assert not any(t(Flags.ACK) for t in tests)
    synrecv = segment_causes(S.SYN_SENT, S.SYN_RECV)
    assert synrecv
    assert any(t(Flags.SYN) for t in synrecv)
    assert not any(t(Flags.SYN | Flags.ACK) for t in synrecv)


def test_a_traced_close_also_counts_the_time_wait_takeover() -> None:
    # The tracepoint shows FIN_WAIT2 -> CLOSE when a FIN makes the TIME_WAIT mini-socket take
    # over (it never reports TIME_WAIT); an RST can end FIN_WAIT2 too.
    tests = segment_causes(S.FIN_WAIT2, S.CLOSE)
    assert tests
    assert any(t(Flags.FIN | Flags.ACK) for t in tests)
    assert any(t(Flags.RST) for t in tests)
    assert not any(t(Flags.ACK) for t in tests)


def test_moves_the_table_lacks_accept_any_segment() -> None:
    assert segment_causes(S.LISTEN, S.TIME_WAIT) is None


def test_a_connect_traced_before_its_port_is_chosen_is_named_after_its_socket() -> None:
    from handshake_lab.lab.evidence import transition_records  # noqa: PLC0415
    from handshake_lab.observe.base import Address  # noqa: PLC0415
    from handshake_lab.observe.trace import TraceEvent  # noqa: PLC0415

    ev = TraceEvent(
        time=1.0,
        kind="state",
        local=Address("198.18.0.2", 0),
        remote=Address("198.18.0.1", 80),
        old=S.CLOSE,
        new=S.SYN_SENT,
    )
    sides: dict[tuple[tuple[str, int], tuple[str, int] | None], str] = {
        (("198.18.0.2", 40000), ("198.18.0.1", 80)): "client"
    }
    (record,) = transition_records([ev], sides, [], 0.0)
    assert record["side"] == "client"
    assert record["cause"] == "application call"
