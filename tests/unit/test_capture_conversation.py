"""Conversations: who is client, Wireshark-style relative numbers, and the seed's arithmetic."""

from __future__ import annotations

import dataclasses

import pytest

from handshake_lab.capture.conversation import (
    check_fin_acks,
    check_handshake,
    conversation,
    conversations,
)
from handshake_lab.capture.decode import LinkType, Packet, TcpOptions
from handshake_lab.tcp.segments import SEQ_SPACE, Flags

C = ("127.0.0.1", 40000)
S = ("127.0.0.1", 8080)
J = 3482  # client ISN
K = 9_000_000  # server ISN


def pkt(
    src: tuple[str, int],
    dst: tuple[str, int],
    flags: str,
    seq: int,
    ack: int = 0,
    length: int = 0,
    t: float = 0.0,
    window: int = 65495,
    options: TcpOptions | None = None,
) -> Packet:
    return Packet(
        timestamp=t,
        wall_time=1_700_000_000.0 + t,
        interface="lo",
        link_type=LinkType.ETHERNET,
        ip_version=6 if ":" in src[0] else 4,
        src=src[0],
        dst=dst[0],
        src_port=src[1],
        dst_port=dst[1],
        seq=seq % SEQ_SPACE,
        ack=ack % SEQ_SPACE,
        flags=Flags.from_text(flags),
        window=window,
        payload_len=length,
        options=options or TcpOptions(),
    )


def session(j: int = J, k: int = K) -> list[Packet]:
    """connect, client sends 5 bytes, client closes, server closes."""
    mss = TcpOptions(mss=65495, wscale=7, sack_permitted=True)
    return [
        pkt(C, S, "SYN", j, t=0.0, options=mss),
        pkt(S, C, "SYN,ACK", k, j + 1, t=0.000_05, window=65483, options=mss),
        pkt(C, S, "ACK", j + 1, k + 1, t=0.000_1, window=512),
        pkt(C, S, "PSH,ACK", j + 1, k + 1, 5, t=0.001, window=512),
        pkt(S, C, "ACK", k + 1, j + 6, t=0.001_1, window=512),
        pkt(C, S, "FIN,ACK", j + 6, k + 1, t=0.002, window=512),
        pkt(S, C, "FIN,ACK", k + 1, j + 7, t=0.002_1, window=512),
        pkt(C, S, "ACK", j + 7, k + 2, t=0.002_2, window=512),
    ]


def test_descriptions_use_relative_numbers_and_show_the_isn_on_syns() -> None:
    conv = conversation(session())

    assert (conv.client, conv.server) == (C, S)
    assert (conv.client_base, conv.server_base) == (J, K)
    assert [e.description for e in conv.entries] == [
        "SYN seq=0 (abs 3482), win=65495, mss=65495, ws=7, sack_perm",
        "SYN,ACK seq=0 ack=1 (abs 9000000), win=65483, mss=65495, ws=7, sack_perm",
        "ACK seq=1 ack=1",
        "PSH,ACK seq=1 ack=1 len=5",
        "ACK seq=1 ack=6",
        "FIN,ACK seq=6 ack=1",
        "FIN,ACK seq=1 ack=7",
        "ACK seq=7 ack=2",
    ]
    assert [e.sender for e in conv.entries] == ["client", "server"] + ["client"] * 2 + [
        "server",
        "client",
        "server",
        "client",
    ]
    assert conv.entries[0].rel_ack is None  # SYN has no ACK flag: ack is meaningless
    assert conv.entries[3].offset == pytest.approx(0.001)
    assert conv.entries[3].relative_segment.next_seq == 6


def test_relative_numbers_wrap_around_two_to_the_32() -> None:
    conv = conversation(session(j=SEQ_SPACE - 3, k=SEQ_SPACE - 1))

    assert [e.label for e in conv.entries] == [
        "SYN seq=0",
        "SYN,ACK seq=0 ack=1",
        "ACK seq=1 ack=1",
        "PSH,ACK seq=1 ack=1 len=5",
        "ACK seq=1 ack=6",
        "FIN,ACK seq=6 ack=1",
        "FIN,ACK seq=1 ack=7",
        "ACK seq=7 ack=2",
    ]
    assert conv.entries[2].packet.ack == 0  # k+1 wrapped to 0 on the wire
    assert all(c.ok for c in check_handshake(conv_packets(conv)))
    assert all(c.ok for c in check_fin_acks(conv_packets(conv)))


def conv_packets(conv: object) -> list[Packet]:
    entries = getattr(conv, "entries", ())
    return [e.packet for e in entries]


def test_without_a_syn_numbers_are_relative_to_the_first_seq_seen() -> None:
    mid = session()[3:]  # capture started after the handshake

    conv = conversation(mid, four_tuple=(*C, *S))

    assert (conv.client, conv.client_isn_seen, conv.server_isn_seen) == (C, False, False)
    assert [e.label for e in conv.entries] == [
        "PSH,ACK seq=0 ack=0 len=5",
        "ACK seq=0 ack=5",
        "FIN,ACK seq=5 ack=0",
        "FIN,ACK seq=0 ack=6",
        "ACK seq=6 ack=1",
    ]


def test_server_is_recognised_from_its_syn_ack_when_the_syn_was_missed() -> None:
    conv = conversation(session()[1:])

    assert (conv.client, conv.server) == (C, S)
    assert conv.server_isn_seen
    assert conv.entries[0].label == "SYN,ACK seq=0 ack=1"  # client base = ack - 1


def test_mid_stream_without_four_tuple_takes_the_first_sender_as_client() -> None:
    conv = conversation(session()[4:])
    assert conv.client == S


def test_a_new_syn_on_the_same_four_tuple_starts_a_new_conversation() -> None:
    first = session()
    retransmitted_syn = dataclasses.replace(first[0], timestamp=0.00001)
    second = session(j=J + 100_000, k=K + 5)

    convs = conversations([first[0], retransmitted_syn, *first[1:], *second])

    assert [len(c.entries) for c in convs] == [9, 8]
    assert convs[1].client_base == J + 100_000


def test_conversation_picks_the_requested_four_tuple_either_way_round() -> None:
    other = [pkt(("127.0.0.1", 5), ("127.0.0.1", 6), "SYN", 1)]
    conv = conversation(other + session(), four_tuple=(*S, *C))
    assert conv.client == C
    with pytest.raises(ValueError, match="no TCP packets"):
        conversation(session(), four_tuple=("10.0.0.1", 1, "10.0.0.2", 2))


# -- the handshake arithmetic ----------------------------------------------------------------


def test_handshake_checks_pass_on_a_correct_handshake() -> None:
    checks = check_handshake(session())

    assert [(c.name, c.ok) for c in checks] == [
        ("handshake.syn", True),
        ("handshake.synack_ack", True),
        ("handshake.ack_ack", True),
        ("handshake.third_not_syn", True),
    ]
    assert "j=3482" in checks[0].detail
    assert "expected j+1=3483" in checks[1].detail


def test_handshake_check_fails_when_syn_ack_acknowledges_j_plus_2() -> None:
    doctored = session()
    doctored[1] = pkt(S, C, "SYN,ACK", K, J + 2)

    checks = {c.name: c for c in check_handshake(doctored)}

    assert not checks["handshake.synack_ack"].ok
    assert "off by +1" in checks["handshake.synack_ack"].detail
    assert checks["handshake.ack_ack"].ok


def test_handshake_check_fails_when_the_third_segment_carries_syn() -> None:
    doctored = session()
    doctored[2] = pkt(C, S, "SYN,ACK", J + 1, K + 1)  # the seed's "SYN(ack=k+1)"

    checks = {c.name: c.ok for c in check_handshake(doctored)}

    assert checks == {
        "handshake.syn": True,
        "handshake.synack_ack": True,
        "handshake.ack_ack": True,
        "handshake.third_not_syn": False,
    }


def test_handshake_check_fails_when_the_ack_is_off() -> None:
    doctored = session()
    doctored[2] = pkt(C, S, "ACK", J + 1, K)
    assert not {c.name: c.ok for c in check_handshake(doctored)}["handshake.ack_ack"]


def test_a_syn_answered_by_rst_ack_j_plus_1_is_a_refused_connection() -> None:
    refused = [session()[0], pkt(S, C, "RST,ACK", 0, J + 1, t=0.000_05)]
    assert [(c.name, c.ok) for c in check_handshake(refused)] == [
        ("handshake.syn", True),
        ("handshake.refused", True),
    ]
    # A RST that acknowledges something else is no answer to this SYN: still no SYN-ACK.
    stray = [session()[0], pkt(S, C, "RST,ACK", 0, J + 7, t=0.000_05)]
    assert {c.name: c.ok for c in check_handshake(stray)}["handshake.synack_ack"] is False


@pytest.mark.parametrize(
    ("packets", "failed"),
    [
        pytest.param([], "handshake.syn", id="nothing"),
        pytest.param(session()[1:], "handshake.syn", id="no-syn"),
        pytest.param(session()[:1], "handshake.synack_ack", id="no-syn-ack"),
        pytest.param(session()[:2], "handshake.ack_ack", id="no-third"),
    ],
)
def test_missing_segments_fail_the_handshake_checks(packets: list[Packet], failed: str) -> None:
    checks = {c.name: c.ok for c in check_handshake(packets)}
    assert checks[failed] is False


# -- FIN arithmetic --------------------------------------------------------------------------


def test_each_fin_is_acknowledged_with_u_plus_1() -> None:
    checks = check_fin_acks(session())

    assert [(c.name, c.ok) for c in checks] == [("fin.client", True), ("fin.server", True)]
    assert "server FIN seq=w=" in checks[1].detail
    assert "expected w+1=" in checks[1].detail
    assert checks[0].detail == (
        "client FIN seq=u=3488 (rel 6) -> server ack=3489 (rel 7), expected u+1=3489"
    )


def test_fin_carrying_data_is_acknowledged_after_its_data() -> None:
    packets = [
        *session()[:3],
        pkt(C, S, "FIN,PSH,ACK", J + 1, K + 1, 5),
        pkt(S, C, "ACK", K + 1, J + 7),
    ]

    (check,) = check_fin_acks(packets)

    assert check.ok
    assert "u=3488" in check.detail


def test_fin_check_fails_on_a_doctored_ack() -> None:
    doctored = session()
    doctored[6] = pkt(S, C, "FIN,ACK", K + 1, J + 8)  # acks one past the client's FIN

    checks = {c.name: c for c in check_fin_acks(doctored)}

    assert not checks["fin.client"].ok
    assert checks["fin.server"].ok


def test_unacknowledged_fin_fails_and_retransmits_are_checked_once() -> None:
    packets = [*session()[:6], session()[5]]  # the client's FIN twice, never ACKed

    checks = check_fin_acks(packets)

    assert [(c.name, c.ok) for c in checks] == [("fin.client", False)]
    assert "never ACKed" in checks[0].detail


def test_no_fin_gives_no_fin_checks() -> None:
    assert check_fin_acks(session()[:4]) == []
    assert check_fin_acks([]) == []


def test_a_syn_ack_answered_by_rst_is_reported_as_a_reset_handshake() -> None:
    # The stale-SYN lab: the SYN's "sender" has no connection and resets the SYN-ACK.
    packets = [
        pkt(C, S, "SYN", 1000, 0, t=0.0),
        pkt(S, C, "SYN,ACK", 5000, 1001, t=0.001),
        pkt(C, S, "RST", 1001, 0, t=0.002),
    ]
    checks = {c.name: c for c in check_handshake(packets)}
    assert checks["handshake.reset"].ok
    assert "handshake.ack_ack" not in checks
    doctored = [*packets[:2], pkt(C, S, "RST", 999, 0, t=0.002)]
    assert not {c.name: c for c in check_handshake(doctored)}["handshake.reset"].ok


def test_retransmitted_syns_are_not_taken_for_the_third_segment() -> None:
    # The SYN-ACK was dropped by a hold: the client resends its SYN before it answers.
    packets = [
        pkt(C, S, "SYN", 1000, 0, t=0.0),
        pkt(S, C, "SYN,ACK", 5000, 1001, t=0.001),
        pkt(C, S, "SYN", 1000, 0, t=1.0),
        pkt(S, C, "SYN,ACK", 5000, 1001, t=1.001),
        pkt(C, S, "ACK", 1001, 5001, t=1.002),
    ]
    checks = {c.name: c for c in check_handshake(packets)}
    assert checks["handshake.ack_ack"].ok
    assert checks["handshake.third_not_syn"].ok
