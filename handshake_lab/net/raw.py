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

Hand-written rather than taken from a packet library (scapy) because it is one 20-byte header
and a checksum; ``tests/unit/test_raw_segment.py`` checks it against the capture decoder.
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
    segments = syn_segments(src, dst, sports, dport, seqs)
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
        raw.bind((src, 0))
        for segment in segments:
            raw.sendto(segment, (dst, 0))


def send_raw_syn(src: str, dst: str, sport: int, dport: int, seq: int) -> None:
    """Send one SYN from ``src:sport`` to ``dst:dport`` (see ``send_raw_syns``)."""
    send_raw_syns(src, dst, [sport], dport, [seq])
