"""The raw SYNs of the SYN-flood lab, without sockets: each decodes, as the capture will decode
it, to a SYN from its own port with its own sequence number, on IPv4 and IPv6, with a checksum
the receiving kernel accepts."""

from __future__ import annotations

import socket
import struct

import pytest

from handshake_lab.capture import decode_frame
from handshake_lab.net.raw import checksum, syn_segments
from handshake_lab.observe.base import family_of
from handshake_lab.tcp.segments import Flags
from handshake_lab.topo.pair import CLIENT_ADDR, CLIENT_ADDR6, SERVER_ADDR, SERVER_ADDR6


def frame(src: str, dst: str, tcp: bytes) -> bytes:
    """An Ethernet frame (zeroed MACs) carrying ``tcp`` in the IP header the kernel would add."""
    family = family_of(src)
    a, b = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    if family == socket.AF_INET6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64) + a + b
        return bytes(12) + b"\x86\xdd" + ip + tcp
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0)
    ip = ip[:10] + struct.pack("!H", checksum(ip + a + b)) + a + b
    return bytes(12) + b"\x08\x00" + ip + tcp


def checksum_ok(src: str, dst: str, segment: bytes) -> bool:
    family = family_of(src)
    a, b = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    if family == socket.AF_INET6:
        pseudo = a + b + struct.pack("!I3xB", len(segment), socket.IPPROTO_TCP)
    else:
        pseudo = a + b + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    return checksum(pseudo + segment) == 0


@pytest.mark.parametrize(
    ("src", "dst"), [(CLIENT_ADDR, SERVER_ADDR), (CLIENT_ADDR6, SERVER_ADDR6)]
)
def test_a_flood_is_one_syn_per_port_each_decoding_as_sent(src: str, dst: str) -> None:
    ports = [40000, 40001, 51234]
    seqs = [0, 2**32 - 1, 123456789]
    segments = syn_segments(src, dst, ports, 8080, seqs)
    assert len(segments) == 3
    decoded = []
    for segment in segments:
        assert checksum_ok(src, dst, segment)
        packet = decode_frame(frame(src, dst, segment))
        assert packet is not None
        decoded.append(packet)
    assert [(p.src, p.dst, p.dst_port) for p in decoded] == [(src, dst, 8080)] * 3
    assert [p.src_port for p in decoded] == ports
    assert [p.seq for p in decoded] == seqs
    assert all(p.flags == Flags.SYN and p.payload_len == 0 for p in decoded)
    assert {p.ip_version for p in decoded} == {6 if ":" in src else 4}


def test_a_flood_needs_one_sequence_number_per_port() -> None:
    with pytest.raises(ValueError, match=r"shorter|longer"):
        syn_segments(CLIENT_ADDR, SERVER_ADDR, [40000, 40001], 8080, [1])
