"""The kernel's own RTT and RTO of one socket: ``struct tcp_info`` over sock_diag.

What ``ss -i`` prints as ``rtt:SRTT/RTTVAR rto:RTO`` comes from ``struct tcp_info``
(``include/uapi/linux/tcp.h``), which the kernel appends to an ``inet_diag`` answer as the
``INET_DIAG_INFO`` attribute when the request asks for it (``idiag_ext``). One exact request
per socket (its 4-tuple), read in the namespace the socket lives in. ``tcpi_rtt`` is the
smoothed RTT (srtt) and ``tcpi_rttvar`` its mean deviation, both in microseconds; ``tcpi_rto``
the retransmission timeout in microseconds. Before the first RTT sample (SYN_SENT) ``tcpi_rtt``
is 0 and ``tcpi_rto`` the initial 1 s.

Split as the netlink observer is: ``info_request`` and ``parse_info`` are pure (bytes in,
figures out); ``read_tcp_info`` is the thin I/O shell.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Mapping

from handshake_lab.errors import HandshakeLabError
from handshake_lab.observe.base import Address
from handshake_lab.observe.netlink import diag_socket, socket_in_netns
from handshake_lab.observe.netlink_codec import (
    ALL_STATES_MASK,
    DIAG_MSG,
    INET_DIAG_NOCOOKIE,
    NLATTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    REQ_V2,
    SOCK_DIAG_BY_FAMILY,
    SOCKID_PORTS,
    SOCKID_TAIL,
)

INET_DIAG_INFO = 2
"""The attribute (and ``idiag_ext`` bit ``1 << (INET_DIAG_INFO - 1)``) of ``struct tcp_info``."""

# struct tcp_info: 8 u8 fields, then u32 fields; rto is the first u32, rtt the 16th.
TCPI_RTO = struct.Struct("=I")
TCPI_RTO_AT = 8
TCPI_RTT = struct.Struct("=II")  # tcpi_rtt, tcpi_rttvar
TCPI_RTT_AT = 68
TCPI_MIN_SIZE = TCPI_RTT_AT + TCPI_RTT.size

TcpInfo = dict[str, float]
"""``{"rtt_ms", "rttvar_ms", "rto_ms"}``: the run record's ``tcp_info`` of one side."""


def _address_bytes(host: str) -> tuple[int, bytes]:
    packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    if len(packed) == 4:
        return socket.AF_INET, packed + bytes(12)
    return socket.AF_INET6, packed


def info_request(local: Address, remote: Address, seq: int = 1) -> bytes:
    """The exact sock_diag request for one connected socket, asking for ``tcp_info``."""
    family, src = _address_bytes(local.host)
    _, dst = _address_bytes(remote.host)
    body = REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, ALL_STATES_MASK)
    body += SOCKID_PORTS.pack(local.port, remote.port) + src + dst
    body += SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
    return header + body


def parse_info(data: bytes) -> TcpInfo | None:
    """The figures of the first ``INET_DIAG_INFO`` attribute in a reply; None if there is none
    (no such socket, a TIME_WAIT or request socket, which carry no ``tcp_info``)."""
    at = 0
    while at + NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, at)
        if length < NLMSGHDR.size or kind in (NLMSG_DONE, NLMSG_ERROR):
            return None
        end = min(at + length, len(data))
        attr = at + NLMSGHDR.size + DIAG_MSG.size
        while attr + NLATTR.size <= end:
            attr_len, attr_type = NLATTR.unpack_from(data, attr)
            if attr_len < NLATTR.size:
                break
            if attr_type & 0x3FFF == INET_DIAG_INFO and attr_len - NLATTR.size >= TCPI_MIN_SIZE:
                info = attr + NLATTR.size
                (rto,) = TCPI_RTO.unpack_from(data, info + TCPI_RTO_AT)
                rtt, rttvar = TCPI_RTT.unpack_from(data, info + TCPI_RTT_AT)
                return {"rtt_ms": rtt / 1000, "rttvar_ms": rttvar / 1000, "rto_ms": rto / 1000}
            attr += (attr_len + 3) & ~3
        at += (length + 3) & ~3
    return None


def read_tcp_info(
    sockets: Mapping[str, tuple[Address, Address]], netns: Mapping[str, str | None]
) -> dict[str, TcpInfo]:
    """Each named socket's ``tcp_info`` figures, read in its namespace (``netns[name]``; None:
    this thread's). A socket the kernel does not answer for is left out; so is every socket
    when sock_diag cannot be read at all (the figures are extra, never a reason to fail)."""
    out: dict[str, TcpInfo] = {}
    by_ns: dict[str | None, list[str]] = {}
    for name in sockets:
        by_ns.setdefault(netns.get(name), []).append(name)
    for ns, names in by_ns.items():
        try:
            sock = diag_socket() if ns is None else socket_in_netns(ns)
        except (OSError, ValueError, RuntimeError, HandshakeLabError):
            continue
        with sock:
            sock.settimeout(1.0)
            for seq, name in enumerate(names, start=1):
                found = _ask(sock, *sockets[name], seq)
                if found is not None:
                    out[name] = found
    return out


def _ask(sock: socket.socket, local: Address, remote: Address, seq: int) -> TcpInfo | None:
    with contextlib.suppress(OSError, struct.error):
        sock.send(info_request(local, remote, seq))
        return parse_info(sock.recv(65536))
    return None


def rounded(infos: Iterable[tuple[str, TcpInfo]]) -> dict[str, TcpInfo]:
    """The figures as the record keeps them: milliseconds to the microsecond."""
    return {name: {k: round(v, 3) for k, v in info.items()} for name, info in infos}


__all__ = ["INET_DIAG_INFO", "TcpInfo", "info_request", "parse_info", "read_tcp_info", "rounded"]
