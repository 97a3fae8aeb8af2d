"""What a forge reads from the wire: the receiver's RCV.NXT and window (pure, no sockets)."""

from __future__ import annotations

import pytest

from handshake_lab.capture.decode import LinkType, Packet, TcpOptions
from handshake_lab.net.forge import expected_by, max_seq
from handshake_lab.tcp.segments import SEQ_SPACE, Flags

C = ("198.18.0.2", 40000)
S = ("198.18.0.1", 8080)
J = SEQ_SPACE - 5  # the client's ISN, so that its numbers wrap around 2**32
K = 777


def pkt(
    src: tuple[str, int],
    dst: tuple[str, int],
    flags: str,
    seq: int,
    ack: int = 0,
    length: int = 0,
    window: int = 64,
    options: TcpOptions | None = None,
) -> Packet:
    return Packet(
        timestamp=0.0,
        wall_time=0.0,
        interface="veth",
        link_type=LinkType.ETHERNET,
        ip_version=4,
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


def handshake(client_ws: int | None = 10, server_ws: int | None = 10) -> list[Packet]:
    return [
        pkt(C, S, "SYN", J, window=64240, options=TcpOptions(mss=1460, wscale=client_ws)),
        pkt(S, C, "SYN,ACK", K, J + 1, window=65160, options=TcpOptions(wscale=server_ws)),
        pkt(C, S, "ACK", J + 1, K + 1),
    ]


def test_rcv_nxt_is_the_ack_of_the_servers_latest_segment_and_the_window_is_scaled() -> None:
    wire = [*handshake(), pkt(C, S, "PSH,ACK", J + 1, K + 1, 11), pkt(S, C, "ACK", K + 1, J + 12)]
    expected = expected_by(wire, C, S)
    assert expected is not None
    assert expected.rcv_nxt == (J + 12) % SEQ_SPACE
    assert expected.window == 64 << 10
    assert expected.settled


def test_data_not_yet_acknowledged_is_not_settled() -> None:
    wire = [*handshake(), pkt(S, C, "ACK", K + 1, J + 1), pkt(C, S, "PSH,ACK", J + 1, K + 1, 11)]
    expected = expected_by(wire, C, S)
    assert expected is not None
    assert expected.rcv_nxt == (J + 1) % SEQ_SPACE
    assert not expected.settled


def test_forged_segments_are_not_what_the_receiver_must_acknowledge() -> None:
    # The forged SYN and RST carry no ACK: they do not move what the server is expected to ack.
    wire = [
        *handshake(),
        pkt(S, C, "ACK", K + 1, J + 1),
        pkt(C, S, "SYN", J + 1),
        pkt(S, C, "ACK", K + 1, J + 1),
        pkt(C, S, "RST", J + 1001),
    ]
    expected = expected_by(wire, C, S)
    assert expected is not None
    assert expected.settled
    assert expected.window == 64 << 10  # the handshake's scale, not the forged SYN's


@pytest.mark.parametrize(("client_ws", "server_ws"), [(None, 10), (10, None)])
def test_without_both_scale_options_the_window_is_not_scaled(
    client_ws: int | None, server_ws: int | None
) -> None:
    wire = [*handshake(client_ws, server_ws), pkt(S, C, "ACK", K + 1, J + 1)]
    expected = expected_by(wire, C, S)
    assert expected is not None
    assert expected.window == 64


def test_nothing_from_the_receiver_yet_gives_none_and_no_handshake_no_window() -> None:
    assert expected_by([pkt(C, S, "SYN", J)], C, S) is None
    mid_stream = expected_by([pkt(S, C, "ACK", K + 1, J + 1)], C, S)
    assert mid_stream is not None
    assert mid_stream.window is None


def test_max_seq_orders_modulo_two_to_the_32() -> None:
    assert max_seq([SEQ_SPACE - 1, 3, 1]) == 3
    with pytest.raises(ValueError, match="no sequence numbers"):
        max_seq([])
