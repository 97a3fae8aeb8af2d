"""``observe.tcpinfo``'s pure half: the sock_diag request asking for tcp_info, and the figures
read out of a reply (built here byte by byte as the kernel lays them out). No sockets."""

from __future__ import annotations

import socket
import struct

from handshake_lab.observe.base import Address
from handshake_lab.observe.netlink_codec import DIAG_MSG, NLATTR, NLMSG_ERROR, NLMSGHDR, REQ_V2
from handshake_lab.observe.tcpinfo import INET_DIAG_INFO, info_request, parse_info


def tcp_info(rto_us: int, rtt_us: int, rttvar_us: int, size: int = 232) -> bytes:
    """A ``struct tcp_info`` with those three fields set, everything else zero."""
    body = bytearray(size)
    struct.pack_into("=I", body, 8, rto_us)
    struct.pack_into("=II", body, 68, rtt_us, rttvar_us)
    return bytes(body)


def reply(*attrs: tuple[int, bytes], kind: int = 20) -> bytes:
    """One inet_diag answer with the given attributes (type, payload), 4-byte aligned."""
    body = bytes(DIAG_MSG.size)
    for attr_type, payload in attrs:
        attr = NLATTR.pack(NLATTR.size + len(payload), attr_type) + payload
        body += attr + bytes(-len(attr) % 4)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, 0, 1, 0) + body


def test_the_request_asks_for_one_socket_and_its_tcp_info() -> None:
    request = info_request(Address("198.18.0.2", 40000), Address("198.18.0.1", 8080), seq=7)
    length, kind, flags, seq, _ = NLMSGHDR.unpack_from(request)
    assert (length, kind, flags, seq) == (len(request), 20, 1, 7), "not a dump: one socket"
    family, protocol, ext, _, _ = REQ_V2.unpack_from(request, NLMSGHDR.size)
    assert (family, protocol) == (socket.AF_INET, socket.IPPROTO_TCP)
    assert ext == 1 << (INET_DIAG_INFO - 1)
    sockid = request[NLMSGHDR.size + REQ_V2.size :]
    assert struct.unpack_from("!HH", sockid) == (40000, 8080)
    assert sockid[4:8] == socket.inet_aton("198.18.0.2")
    assert sockid[20:24] == socket.inet_aton("198.18.0.1")


def test_an_ipv6_request_carries_both_addresses_whole() -> None:
    request = info_request(Address("::1", 1), Address("2001:db8:198:18::1", 2))
    assert REQ_V2.unpack_from(request, NLMSGHDR.size)[0] == socket.AF_INET6
    sockid = request[NLMSGHDR.size + REQ_V2.size :]
    assert sockid[4:20] == socket.inet_pton(socket.AF_INET6, "::1")
    assert sockid[20:36] == socket.inet_pton(socket.AF_INET6, "2001:db8:198:18::1")


def test_the_figures_are_read_in_milliseconds() -> None:
    found = parse_info(reply((1, b"\x00" * 8), (INET_DIAG_INFO, tcp_info(204000, 50123, 25061))))
    assert found == {"rtt_ms": 50.123, "rttvar_ms": 25.061, "rto_ms": 204.0}


def test_a_reply_without_tcp_info_gives_none() -> None:
    assert parse_info(reply((1, b"\x00" * 8))) is None
    assert parse_info(reply((INET_DIAG_INFO, tcp_info(1, 2, 3)[:40]))) is None, "truncated"
    assert parse_info(NLMSGHDR.pack(20, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2)) is None
    assert parse_info(b"") is None
