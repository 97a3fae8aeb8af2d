"""Forged segments on a live connection: RST validation and challenge ACKs (RFC 5961).

To forge a RST or a SYN for an established connection one needs its 4-tuple, which the lab
knows, and the sequence number the receiver expects next (its RCV.NXT), which only the wire
tells: the initial sequence numbers are random and no socket API reports them (TCP_REPAIR
would, but that is the kernel handing over its state, not what anyone on the network can do).
So the client's side opens a :class:`WireTap` when the run starts, before any connection: an
``AF_PACKET`` socket in the client's namespace that sees every segment of the lab's ports
crossing that namespace's interfaces (an observer on the client's side of the link, as an
on-path attacker would be). A forge then reads the server's latest segment to the client: its
ACK number *is* the server's RCV.NXT, and its window, scaled by the factor the server's
SYN-ACK announced, is the server's receive window.

The segments themselves are built by :func:`handshake_lab.net.raw.tcp_segment` (IPv4 and
IPv6) and sent through a raw socket bound to the client's address: the kernel writes the IP
header, so the segment leaves with the connection's own 4-tuple.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from handshake_lab.capture.bpf import attach_filter, tcp_ports_program
from handshake_lab.capture.decode import DecodeError, Packet, decode_frame
from handshake_lab.errors import MissingDependencyError
from handshake_lab.net.raw import tcp_segment
from handshake_lab.tcp.segments import Flags, seq_diff

ETH_P_ALL = 0x0003
TAP_RCVBUF = 1 << 20
"""Room for the lab's segments between two reads (a few hundred bytes each)."""
FRAME_MAX = 65536
ARPHRD_LOOPBACK = 772
NEED_RAW = "forging a segment needs CAP_NET_RAW: run as root (or in the lab's user namespace)"

Scope = Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True, slots=True)
class Expected:
    """What the receiving end of a connection expects next, as its own segments say."""

    rcv_nxt: int
    """The ACK number of its latest segment: the next sequence number it will accept."""
    window: int | None
    """Its latest advertised window in bytes (scaled), None if the scale is unknown."""
    settled: bool
    """Whether that ACK covers everything the other end had sent (nothing in flight)."""


def expected_by(
    packets: Sequence[Packet], sender: tuple[str, int], receiver: tuple[str, int]
) -> Expected | None:
    """What ``receiver`` expects next from ``sender``, read from the captured ``packets``
    (oldest first): the ACK number and scaled window of the latest segment ``receiver`` sent to
    ``sender``. None if the receiver has sent no ACK yet. Pure: no I/O."""
    to_sender = [
        p
        for p in packets
        if p.src_endpoint == receiver and p.dst_endpoint == sender and Flags.ACK in p.flags
    ]
    if not to_sender:
        return None
    latest = to_sender[-1]
    # Window scaling (RFC 7323) is on only if both SYNs carried the option; the receiver's
    # own factor applies to the windows it advertises after its SYN.
    # The handshake's SYNs count: a later SYN (forged) negotiates nothing.
    syn = [p for p in packets if p.src_endpoint == sender and p.dst_endpoint == receiver]
    syns = [p for p in syn if Flags.SYN in p.flags and Flags.ACK not in p.flags]
    synacks = [p for p in to_sender if Flags.SYN in p.flags]
    window: int | None = None
    if syns and synacks:
        theirs, ours = syns[0].options.wscale, synacks[0].options.wscale
        scale = ours if theirs is not None and ours is not None else 0
        window = latest.window << scale if Flags.SYN not in latest.flags else latest.window
    # The sender's own segments carry ACK once its SYN is answered; a forged RST or SYN (no
    # ACK) is not part of what the receiver is expected to acknowledge.
    sent_next = [
        p.segment.next_seq for p in syn if Flags.ACK in p.flags and Flags.RST not in p.flags
    ]
    settled = not sent_next or seq_diff(latest.ack, max_seq(sent_next)) >= 0
    return Expected(latest.ack, window, settled)


def max_seq(values: Iterable[int]) -> int:
    """The latest of sequence numbers, in modulo-2^32 order (RFC 1982 style)."""
    best: int | None = None
    for value in values:
        if best is None or seq_diff(value, best) > 0:
            best = value
    if best is None:
        raise ValueError("no sequence numbers")
    return best


class WireTap:
    """Every TCP segment to or from ``ports`` on any interface of the namespace the socket is
    made in, kept in the socket's queue until :meth:`read` (no thread: a forge reads when it
    needs the numbers). Loopback devices are skipped: the lab's link is the veth."""

    def __init__(self, ports: Collection[int]) -> None:
        self.ports = frozenset(ports)
        self.packets: list[Packet] = []
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Create the socket in the caller's namespace; MissingDependencyError without
        CAP_NET_RAW."""
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise MissingDependencyError(NEED_RAW) from exc
        try:
            with contextlib.suppress(OSError):  # the user-space test below stands alone
                attach_filter(sock, tcp_ports_program(sorted(self.ports)))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TAP_RCVBUF)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def read(self) -> list[Packet]:
        """Every segment queued since the last read, added to ``packets`` (oldest first)."""
        if self._sock is None:
            return self.packets
        while True:
            try:
                frame, address = self._sock.recvfrom(FRAME_MAX)
            except BlockingIOError:
                break
            if address[3] == ARPHRD_LOOPBACK:
                continue
            try:
                packet = decode_frame(frame, interface=str(address[0]))
            except DecodeError:
                continue
            if packet is not None and {packet.src_port, packet.dst_port} & self.ports:
                self.packets.append(packet)
        return self.packets

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def send_segments(
    src: tuple[str, int], dst: tuple[str, int], *, seq: int, flags: Flags, count: int = 1
) -> None:
    """Send ``count`` copies of one header-only segment from ``src`` to ``dst`` back to back,
    through a raw socket made in the caller's namespace (CAP_NET_RAW)."""
    segment = tcp_segment(src[0], dst[0], src[1], dst[1], seq=seq % 2**32, flags=flags)
    family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    try:
        raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
    except PermissionError as exc:
        raise MissingDependencyError(NEED_RAW) from exc
    with raw:
        raw.bind((src[0], 0))
        for _ in range(count):
            raw.sendto(segment, (dst[0], 0))
