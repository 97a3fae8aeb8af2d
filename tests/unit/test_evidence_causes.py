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
