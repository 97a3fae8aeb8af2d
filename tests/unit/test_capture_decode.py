"""Frame decoding: hand-built Ethernet/IPv4/IPv6/TCP frames; random bytes must not crash it."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.capture.decode import DecodeError, LinkType, Packet, TcpOptions, decode_frame
from handshake_lab.tcp.segments import Flags, Segment

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
ZERO_MAC = bytes(6)

# MSS 1460, SACK-permitted, timestamps 1234/0, NOP, window scale 7 (Linux's SYN order).
SYN_OPTIONS = (
    struct.pack("!BBH", 2, 4, 1460)
    + struct.pack("!BB", 4, 2)
    + struct.pack("!BBII", 8, 10, 1234, 0)
    + struct.pack("!B", 1)
    + struct.pack("!BBB", 3, 3, 7)
)


def tcp_header(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int = 65535,
    options: bytes = b"",
    data_offset: int | None = None,
) -> bytes:
    assert len(options) % 4 == 0
    words = data_offset if data_offset is not None else 5 + len(options) // 4
    return (
        struct.pack("!HHIIHHHH", sport, dport, seq, ack, (words << 12) | flags, window, 0, 0)
        + options
    )


def ipv4(src: str, dst: str, payload: bytes, proto: int = 6, frag: int = 0) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x1234,
        frag,
        64,
        proto,
        0,
        socket.inet_pton(socket.AF_INET, src),
        socket.inet_pton(socket.AF_INET, dst),
    )
    return header + payload


def ipv6(src: str, dst: str, payload: bytes, next_header: int = 6) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + payload
    )


def ether(payload: bytes, ethertype: int, src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def v4_frame(tcp: bytes, src: str = "198.18.0.1", dst: str = "198.18.0.2") -> bytes:
    return ether(ipv4(src, dst, tcp), 0x0800)


def must(packet: Packet | None) -> Packet:
    assert packet is not None
    return packet


def test_ipv4_syn_with_options_decodes_every_field() -> None:
    frame = v4_frame(tcp_header(40000, 8080, 3482, 0, 0x02, 64240, SYN_OPTIONS))

    p = must(decode_frame(frame, timestamp=12.5, wall_time=1.7e9, interface="veth0"))

    assert (p.ip_version, p.src, p.dst) == (4, "198.18.0.1", "198.18.0.2")
    assert (p.src_port, p.dst_port, p.seq, p.ack) == (40000, 8080, 3482, 0)
    assert p.flags == Flags.SYN
    assert (p.window, p.payload_len, p.payload) == (64240, 0, b"")
    assert p.options == TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(1234, 0))
    assert p.options.describe() == "mss=1460 ws=7 sack_perm ts=1234/0"
    assert (p.timestamp, p.wall_time, p.interface) == (12.5, 1.7e9, "veth0")
    assert p.link_type == LinkType.ETHERNET
    assert (p.frame, p.orig_len) == (frame, len(frame))
    assert p.four_tuple == ("198.18.0.1", 40000, "198.18.0.2", 8080)


def test_segment_property_is_the_tcp_model_segment() -> None:
    frame = v4_frame(tcp_header(40000, 8080, 2**32 - 2, 77, 0x19, 501) + b"hello")

    p = must(decode_frame(frame))

    assert p.segment == Segment(
        flags=Flags.FIN | Flags.PSH | Flags.ACK, seq=2**32 - 2, ack=77, payload_len=5, window=501
    )
    assert p.segment.next_seq == 4  # 5 bytes + FIN, wrapped past 2**32
    assert p.payload == b"hello"


def test_loopback_frame_with_zero_macs_decodes_like_ethernet() -> None:
    # What AF_PACKET on lo delivers: a 14-byte Ethernet header with both MACs zero.
    frame = ether(
        ipv4("127.0.0.1", "127.0.0.1", tcp_header(5, 6, 1, 2, 0x10)), 0x0800, ZERO_MAC, ZERO_MAC
    )

    p = must(decode_frame(frame, interface="lo"))

    assert (p.src, p.dst, p.flags, p.payload_len) == ("127.0.0.1", "127.0.0.1", Flags.ACK, 0)


def test_payload_length_comes_from_ip_header_not_padded_frame_length() -> None:
    frame = v4_frame(tcp_header(1, 2, 10, 20, 0x10)) + bytes(6)  # Ethernet pads to 60 bytes

    p = must(decode_frame(frame))

    assert p.payload_len == 0
    assert p.payload == b""


def test_payload_cut_by_snap_length_keeps_wire_length() -> None:
    frame = v4_frame(tcp_header(1, 2, 10, 20, 0x18) + b"x" * 100)

    p = must(decode_frame(frame[:-60], orig_len=len(frame)))

    assert p.payload_len == 100
    assert p.payload == b"x" * 40
    assert p.orig_len == len(frame)


def test_ipv6_syn_ack() -> None:
    tcp = tcp_header(8080, 40000, 9000, 3483, 0x12, 65483, SYN_OPTIONS)
    frame = ether(ipv6("2001:db8::1", "2001:db8::2", tcp), 0x86DD)

    p = must(decode_frame(frame))

    assert (p.ip_version, p.src, p.dst) == (6, "2001:db8::1", "2001:db8::2")
    assert (p.seq, p.ack, p.flags) == (9000, 3483, Flags.SYN | Flags.ACK)
    assert p.options.mss == 1460


def test_ipv6_walks_a_hop_by_hop_extension_header() -> None:
    tcp = tcp_header(1, 2, 3, 4, 0x18) + b"abc"
    hop_by_hop = struct.pack("!BB", 6, 0) + bytes([1, 4, 0, 0, 0, 0])  # next=TCP, 8 bytes, PadN
    frame = ether(ipv6("::1", "::1", hop_by_hop + tcp, next_header=0), 0x86DD)

    p = must(decode_frame(frame))

    assert (p.src_port, p.dst_port, p.payload_len, p.payload) == (1, 2, 3, b"abc")


def test_vlan_tagged_frame() -> None:
    inner = ipv4("198.18.0.1", "198.18.0.2", tcp_header(1, 2, 3, 4, 0x10))
    frame = MAC_B + MAC_A + struct.pack("!HHH", 0x8100, 42, 0x0800) + inner

    assert must(decode_frame(frame)).src_port == 1


def test_raw_ip_link_type() -> None:
    packet = ipv4("198.18.0.1", "198.18.0.2", tcp_header(1, 2, 3, 4, 0x10))

    p = must(decode_frame(packet, link_type=LinkType.RAW))

    assert (p.link_type, p.dst_port) == (LinkType.RAW, 2)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(ether(b"\x00\x01" * 14, 0x0806), id="arp"),
        pytest.param(ether(ipv4("1.1.1.1", "2.2.2.2", bytes(8), proto=17), 0x0800), id="udp"),
        pytest.param(ether(ipv6("::1", "::1", bytes(8), next_header=58), 0x86DD), id="icmpv6"),
        pytest.param(
            ether(ipv4("1.1.1.1", "2.2.2.2", bytes(20), frag=0x0010), 0x0800), id="fragment"
        ),
        pytest.param(b"", id="empty"),
        pytest.param(MAC_B + MAC_A, id="short-ethernet"),
        pytest.param(ether(bytes(10), 0x0800), id="short-ipv4"),
    ],
)
def test_frames_that_are_not_tcp_give_none(frame: bytes) -> None:
    assert decode_frame(frame) is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        pytest.param(v4_frame(tcp_header(1, 2, 3, 4, 0x10))[:40], "truncated", id="cut-header"),
        pytest.param(v4_frame(tcp_header(1, 2, 3, 4, 0x10, data_offset=4)), "below", id="off<5"),
        pytest.param(
            v4_frame(tcp_header(1, 2, 3, 4, 0x10, data_offset=15)), "longer", id="off>ip-len"
        ),
        pytest.param(v4_frame(b"\x00" * 8), "IP length", id="ip-too-short-for-tcp"),
    ],
)
def test_broken_tcp_raises_decode_error(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_frame(frame)


def test_malformed_options_are_skipped_not_fatal() -> None:
    # MSS, then an option claiming length 0 (invalid): parsing stops, the segment survives.
    options = struct.pack("!BBH", 2, 4, 536) + bytes([99, 0, 0, 0])
    p = must(decode_frame(v4_frame(tcp_header(1, 2, 3, 4, 0x02, options=options))))

    assert p.options.mss == 536
    assert p.options.other == ()


def test_unknown_and_sack_options_are_listed() -> None:
    options = (
        bytes([1, 1])
        + struct.pack("!BBII", 5, 10, 100, 200)
        + bytes([30, 4, 0, 0])  # MPTCP-ish kind 30
        + bytes([0, 0, 0, 0])  # EOL + padding to a 4-byte boundary
    )
    p = must(decode_frame(v4_frame(tcp_header(1, 2, 3, 4, 0x10, options=options))))

    assert p.options.sack_blocks == ((100, 200),)
    assert p.options.other == (30,)


# -- fuzzing: the decoder returns None, a Packet, or raises DecodeError; nothing else ---------

VALID = v4_frame(tcp_header(40000, 8080, 1, 2, 0x18, options=SYN_OPTIONS) + b"payload")


def _decode_or_error(frame: bytes, link_type: LinkType = LinkType.ETHERNET) -> None:
    try:
        result = decode_frame(frame, link_type=link_type)
    except DecodeError:
        return
    assert result is None or isinstance(result, Packet)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(list(LinkType)))
def test_random_bytes_never_crash_the_decoder(frame: bytes, link_type: LinkType) -> None:
    _decode_or_error(frame, link_type)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([VALID[:14] + b"\x45", VALID[:12] + b"\x86\xdd\x60", VALID[:34]]),
    st.binary(max_size=120),
)
def test_random_bytes_behind_valid_headers_never_crash(prefix: bytes, rest: bytes) -> None:
    _decode_or_error(prefix + rest)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6))
def test_mutated_valid_frames_never_crash(edits: list[tuple[int, int]]) -> None:
    frame = bytearray(VALID)
    for index, value in edits:
        frame[index] = value
    _decode_or_error(bytes(frame))
