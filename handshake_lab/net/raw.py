"""Raw TCP segments for the stale-SYN and SYN-flood labs: SYNs that no socket on the sender owns.

RFC 9293 section 3.5 explains the three-way handshake by an old duplicate SYN arriving at a
listener: the listener answers SYN-ACK, the supposed sender's kernel has no such connection and
answers RST, and the listener drops the half-open connection. To show that on a real kernel we
send such a SYN ourselves with a raw socket (``SOCK_RAW``/``IPPROTO_TCP``: the kernel adds the IP
header, we supply the TCP header and its checksum). Raw sockets need CAP_NET_RAW, which the lab
has inside its own namespaces.

A SYN flood is the same segment many times, each from its own port: the listener makes a
request socket (SYN_RECV) for each until its SYN queue is full, and the SYN-ACKs go to ports
where nobody waits for them.

The TIME_WAIT lab sends a late copy of a connection's own SYN (``resend_segment``): the TCP
header exactly as the server's listener saved it (TCP_SAVE_SYN), options included, with only
the checksum computed anew.

Hand-written rather than taken from a packet library (scapy) because it is one 20-byte header
and a checksum; ``tests/unit/test_ipv6.py`` and ``tests/unit/test_raw_resend.py`` check
it against the capture decoder and the pseudo-header sum.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence

from handshake_lab.tcp.segments import Flags

TCP_HEADER = struct.Struct("!HHIIBBHHH")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_segment(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    seq: int,
    ack: int = 0,
    flags: Flags = Flags.SYN,
    window: int = 64240,
) -> bytes:
    """A 20-byte TCP header (no options, no payload) with a correct checksum over the IPv4
    or (addresses with a colon) IPv6 pseudo-header (RFC 8200 section 8.1)."""
    header = TCP_HEADER.pack(sport, dport, seq, ack, 5 << 4, int(flags), window, 0, 0)
    return with_checksum(src, dst, header)


def with_checksum(src: str, dst: str, header: bytes) -> bytes:
    """``header`` (a TCP header with its options, no payload) with its checksum field set for
    the IPv4 or (addresses with a colon) IPv6 pseudo-header of ``src`` -> ``dst``."""
    header = header[:16] + b"\0\0" + header[18:]
    source, dest = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if source.version != dest.version:
        raise ValueError(f"{src} and {dst} are of different IP versions")
    if source.version == 6:
        pseudo = struct.pack(
            "!16s16sI3xB", source.packed, dest.packed, len(header), socket.IPPROTO_TCP
        )
    else:
        pseudo = struct.pack(
            "!4s4sBBH", source.packed, dest.packed, 0, socket.IPPROTO_TCP, len(header)
        )
    csum = checksum(pseudo + header)
    return header[:16] + struct.pack("!H", csum) + header[18:]


def syn_segments(
    src: str, dst: str, sports: Sequence[int], dport: int, seqs: Sequence[int]
) -> list[bytes]:
    """One SYN per source port (with the matching sequence number), to ``dst:dport``."""
    pairs = zip(sports, seqs, strict=True)  # one sequence number per port, or ValueError
    return [tcp_segment(src, dst, sport, dport, seq=seq) for sport, seq in pairs]


def send_raw_syns(
    src: str, dst: str, sports: Sequence[int], dport: int, seqs: Sequence[int]
) -> None:
    """Send a SYN from each ``src:sport`` to ``dst:dport`` through one raw socket (CAP_NET_RAW).
    The kernel writes the IP header (v4 or v6); the checksum is ours, for both: an IPv6 raw
    socket computes none unless IPV6_CHECKSUM asks it to."""
    send_raw(src, dst, syn_segments(src, dst, sports, dport, seqs))


def send_raw(src: str, dst: str, segments: Sequence[bytes]) -> None:
    """Send TCP ``segments`` (headers and checksums ready) from ``src`` to ``dst`` through one
    raw socket."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
        raw.bind((src, 0))
        for segment in segments:
            raw.sendto(segment, (dst, 0))


def send_raw_syn(src: str, dst: str, sport: int, dport: int, seq: int) -> None:
    """Send one SYN from ``src:sport`` to ``dst:dport`` (see ``send_raw_syns``)."""
    send_raw_syns(src, dst, [sport], dport, [seq])


def resend_segment(src: str, dst: str, header: bytes) -> None:
    """Send ``header`` (a TCP header as once received, options included) again from ``src``
    to ``dst``, its checksum computed anew (a saved copy may hold a partial one)."""
    send_raw(src, dst, [with_checksum(src, dst, header)])


def tcp_header_of(packet: bytes) -> bytes:
    """The TCP header (with options) of an IPv4 or IPv6 packet that starts with its IP header,
    as TCP_SAVED_SYN returns it. ``ValueError`` if it is not one."""
    if not packet:
        raise ValueError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        start = (packet[0] & 0x0F) * 4
        proto = packet[9] if len(packet) > 9 else -1
    elif version == 6:
        start, proto = 40, packet[6] if len(packet) > 6 else -1
    else:
        raise ValueError(f"IP version {version}")
    if proto != socket.IPPROTO_TCP:
        raise ValueError("not a TCP packet (or one with IPv6 extension headers)")
    if len(packet) < start + 20:
        raise ValueError("truncated TCP header")
    end = start + (packet[start + 12] >> 4) * 4
    if end < start + 20 or len(packet) < end:
        raise ValueError("truncated TCP header")
    return packet[start:end]


def syn_numbers(header: bytes) -> tuple[int, int | None]:
    """(sequence number, TSval or None) of a TCP header with its options."""
    (seq,) = struct.unpack_from("!I", header, 4)
    options = header[20 : (header[12] >> 4) * 4]
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        if kind == 8 and options[i + 1] == 10 and i + 10 <= len(options):
            (tsval,) = struct.unpack_from("!I", options, i + 2)
            return seq, tsval
        i += options[i + 1]
    return seq, None
