"""The late-SYN copy of the TIME_WAIT lab: the TCP header cut out of a saved SYN, its numbers,
and its checksum computed anew, checked against the capture decoder (no sockets)."""

from __future__ import annotations

import socket
import struct

import pytest

from handshake_lab.capture.decode import LinkType, decode_frame
from handshake_lab.net.raw import checksum, syn_numbers, tcp_header_of, tcp_segment, with_checksum

# What TCP_SAVED_SYN returned on this kernel for a SYN 198.18.0.2:50270 -> 198.18.0.1:5000 on a
# veth: the IPv4 header and the TCP header with Linux's options (MSS, SACK-permitted,
# timestamps, NOP, window scale). Its checksum field holds only the pseudo-header's partial
# sum (checksum offload), which is why a resend computes it anew.
SAVED_V4 = bytes.fromhex(
    "4500003c8f1d400040061f77c6120002c6120001c45e13880225a02900000000a002faf08c560000"
    "020405b40402080a180f9803000000000103030a"
)


def _sum_ok(src: str, dst: str, segment: bytes) -> bool:
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    a, b = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    if family == socket.AF_INET6:
        pseudo = a + b + struct.pack("!I3xB", len(segment), socket.IPPROTO_TCP)
    else:
        pseudo = a + b + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    return checksum(pseudo + segment) == 0


def test_the_tcp_header_of_a_saved_ipv4_syn_keeps_its_options_and_numbers() -> None:
    header = tcp_header_of(SAVED_V4)
    assert len(header) == 40  # 20 bytes + 20 of options, no payload
    packet = decode_frame(SAVED_V4, link_type=LinkType.RAW)
    assert packet is not None
    assert packet.options.timestamps is not None
    assert syn_numbers(header) == (packet.seq, packet.options.timestamps[0])
    assert (packet.src_port, packet.dst_port) == (50270, 5000)


def test_a_resent_header_gets_a_checksum_that_verifies_and_nothing_else_changes() -> None:
    header = tcp_header_of(SAVED_V4)
    assert not _sum_ok("198.18.0.2", "198.18.0.1", header)  # the saved partial sum
    fixed = with_checksum("198.18.0.2", "198.18.0.1", header)
    assert _sum_ok("198.18.0.2", "198.18.0.1", fixed)
    assert fixed[:16] == header[:16]
    assert fixed[18:] == header[18:]
    assert not _sum_ok("198.18.0.2", "198.18.0.9", fixed)


def test_an_ipv6_syn_header_is_found_after_the_fixed_header() -> None:
    tcp = tcp_segment("2001:db8:198:18::2", "2001:db8:198:18::1", 40000, 8080, seq=99)
    ip = (
        struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64)
        + socket.inet_pton(socket.AF_INET6, "2001:db8:198:18::2")
        + socket.inet_pton(socket.AF_INET6, "2001:db8:198:18::1")
    )
    header = tcp_header_of(ip + tcp)
    assert header == tcp
    assert syn_numbers(header) == (99, None)  # no timestamps option
    assert _sum_ok(
        "2001:db8:198:18::2",
        "2001:db8:198:18::1",
        with_checksum("2001:db8:198:18::2", "2001:db8:198:18::1", header),
    )


@pytest.mark.parametrize(
    "packet",
    [b"", SAVED_V4[:30], SAVED_V4[:9] + b"\x11" + SAVED_V4[10:], b"\x50" + SAVED_V4[1:]],
    ids=["empty", "truncated", "udp", "version-5"],
)
def test_what_is_not_a_whole_tcp_header_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError, match=r"empty|IP version|not a TCP|truncated"):
        tcp_header_of(packet)
