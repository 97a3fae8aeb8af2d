"""Decode one captured link-layer frame into a :class:`Packet` (pure, no I/O).

What AF_PACKET hands us (measured on Linux 6.18):

* On a veth or a real NIC (ARPHRD_ETHER, hatype 1) the frame starts with a 14-byte Ethernet
  header, as expected.
* On ``lo`` (ARPHRD_LOOPBACK, hatype 772) the frame *also* starts with a 14-byte Ethernet header,
  both MAC addresses all-zero and the real EtherType (0x0800 / 0x86DD). That is why pcap files
  of ``lo`` are LINKTYPE_ETHERNET too, and why one decoder serves both.
* Devices without a link header (ARPHRD_NONE: tun, wireguard) give the bare IP packet; pass
  ``link_type=LinkType.RAW`` for those.

Contract: :func:`decode_frame` returns ``None`` for a frame that is not a TCP segment (ARP, UDP,
ICMP, a non-first IP fragment, a link type we do not know), returns a :class:`Packet` for a TCP
segment, and raises :class:`DecodeError` (a ``ValueError``) when a frame says it carries TCP
but its bytes are too short or inconsistent. It raises nothing else: a property test feeds it
random bytes. A capture loop can therefore skip ``None`` silently and count ``DecodeError``.

Payload length comes from the IP header (total length / payload length), not from the frame
length, because Ethernet pads short frames to 60 bytes and a snap length may cut the payload;
``Packet.payload`` holds only the payload bytes actually captured.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from handshake_lab.tcp.segments import Flags, Segment

__all__ = [
    "DecodeError",
    "LinkType",
    "Packet",
    "TcpOptions",
    "decode_frame",
]

ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_IPV6: Final = 0x86DD
ETHERTYPE_VLAN: Final = 0x8100
ETHERTYPE_QINQ: Final = 0x88A8
IPPROTO_TCP: Final = 6

_ETH_LEN: Final = 14
_TCP_MIN: Final = 20
_IPV6_LEN: Final = 40
# IPv6 extension headers that may sit between the fixed header and TCP and share the
# "next header, length in 8-octet units minus one" layout (RFC 8200 4.3-4.6).
_IPV6_EXT_GENERIC: Final = frozenset({0, 43, 60})
_IPV6_FRAGMENT: Final = 44
_IPV6_AH: Final = 51

# TCP option kinds (IANA "TCP Option Kind Numbers").
_OPT_EOL: Final = 0
_OPT_NOP: Final = 1
_OPT_MSS: Final = 2
_OPT_WSCALE: Final = 3
_OPT_SACK_PERM: Final = 4
_OPT_SACK: Final = 5
_OPT_TIMESTAMPS: Final = 8


class DecodeError(ValueError):
    """A frame that claims to carry TCP is truncated or internally inconsistent."""


class LinkType(IntEnum):
    """Link-layer header types, numbered as pcap's LINKTYPE_* so a writer can use the value."""

    ETHERNET = 1
    """14-byte Ethernet II header (veth, NICs, and ``lo`` with zero MACs)."""
    RAW = 101
    """No link header: the frame is an IPv4 or IPv6 packet (ARPHRD_NONE devices)."""


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """The TCP options a lesson can name; anything else is listed by kind in ``other``."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None
    """``(TSval, TSecr)`` from the RFC 7323 timestamps option."""
    sack_blocks: tuple[tuple[int, int], ...] = ()
    other: tuple[int, ...] = ()
    """Kinds of options present but not decoded above (e.g. 30 for MPTCP)."""

    def describe(self) -> str:
        """Short text such as ``"mss=65495 ws=7 sack_perm ts=123/0"`` (empty when none)."""
        parts: list[str] = []
        if self.mss is not None:
            parts.append(f"mss={self.mss}")
        if self.wscale is not None:
            parts.append(f"ws={self.wscale}")
        if self.sack_permitted:
            parts.append("sack_perm")
        if self.timestamps is not None:
            parts.append(f"ts={self.timestamps[0]}/{self.timestamps[1]}")
        if self.sack_blocks:
            parts.append("sack=" + ",".join(f"{a}-{b}" for a, b in self.sack_blocks))
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Packet:
    """One TCP segment as captured on one interface.

    ``timestamp`` is on the :func:`time.monotonic` clock when the sniffer could convert it
    (see :mod:`handshake_lab.capture.sniffer`); ``wall_time`` is seconds since the epoch, the
    clock pcap files use. ``frame`` is the captured link-layer frame, kept for pcap writing;
    ``orig_len`` is its length on the wire (larger than ``len(frame)`` only if truncated).
    """

    timestamp: float
    wall_time: float
    interface: str
    link_type: LinkType
    ip_version: int
    src: str
    dst: str
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: Flags
    window: int
    payload_len: int
    options: TcpOptions = field(default_factory=TcpOptions)
    payload: bytes = b""
    frame: bytes = b""
    orig_len: int = 0

    @property
    def segment(self) -> Segment:
        """The sans-IO :class:`~handshake_lab.tcp.segments.Segment` for this packet."""
        return Segment(
            flags=self.flags,
            seq=self.seq,
            ack=self.ack,
            payload_len=self.payload_len,
            window=self.window,
        )

    @property
    def src_endpoint(self) -> tuple[str, int]:
        return (self.src, self.src_port)

    @property
    def dst_endpoint(self) -> tuple[str, int]:
        return (self.dst, self.dst_port)

    @property
    def four_tuple(self) -> tuple[str, int, str, int]:
        """``(src, src_port, dst, dst_port)`` in the direction this packet travelled."""
        return (self.src, self.src_port, self.dst, self.dst_port)


def decode_frame(
    frame: bytes,
    *,
    timestamp: float = 0.0,
    wall_time: float | None = None,
    interface: str = "",
    link_type: LinkType = LinkType.ETHERNET,
    orig_len: int | None = None,
) -> Packet | None:
    """Decode ``frame``; ``None`` if it is not TCP, :class:`DecodeError` if it is broken TCP."""
    try:
        return _decode(
            bytes(frame),
            timestamp=timestamp,
            wall_time=timestamp if wall_time is None else wall_time,
            interface=interface,
            link_type=link_type,
            orig_len=len(frame) if orig_len is None else orig_len,
        )
    except DecodeError:
        raise
    except (struct.error, IndexError, ValueError) as exc:  # pragma: no cover - defence in depth
        # Every length is checked before it is used; this only turns a missed check into the
        # documented error instead of a crash in the capture thread.
        raise DecodeError(f"malformed frame: {exc}") from exc


def _decode(
    frame: bytes,
    *,
    timestamp: float,
    wall_time: float,
    interface: str,
    link_type: LinkType,
    orig_len: int,
) -> Packet | None:
    if link_type == LinkType.ETHERNET:
        if len(frame) < _ETH_LEN:
            return None
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        offset = _ETH_LEN
        # Up to two 802.1Q / 802.1ad tags (AF_PACKET usually strips them into aux data,
        # but a pcap or a bridge port may keep them in the frame).
        for _ in range(2):
            if ethertype not in (ETHERTYPE_VLAN, ETHERTYPE_QINQ):
                break
            if len(frame) < offset + 4:
                return None
            (ethertype,) = struct.unpack_from("!H", frame, offset + 2)
            offset += 4
    elif link_type == LinkType.RAW:
        if not frame:
            return None
        version = frame[0] >> 4
        ethertype = {4: ETHERTYPE_IPV4, 6: ETHERTYPE_IPV6}.get(version, 0)
        offset = 0
    else:  # pragma: no cover - exhaustive over LinkType
        return None

    if ethertype == ETHERTYPE_IPV4:
        located = _ipv4(frame, offset)
    elif ethertype == ETHERTYPE_IPV6:
        located = _ipv6(frame, offset)
    else:
        return None
    if located is None:
        return None
    ip_version, src, dst, tcp_off, tcp_total = located

    if tcp_total < _TCP_MIN:
        raise DecodeError(f"IP length leaves {tcp_total} bytes for a TCP header (need 20)")
    if len(frame) < tcp_off + _TCP_MIN:
        raise DecodeError(
            f"frame truncated inside the TCP header ({len(frame) - tcp_off} of 20 bytes)"
        )
    sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", frame, tcp_off)
    header_len = (off_flags >> 12) * 4
    if header_len < _TCP_MIN:
        raise DecodeError(f"TCP data offset {header_len} is below 20 bytes")
    if header_len > tcp_total:
        raise DecodeError(f"TCP header ({header_len} bytes) longer than the IP payload")
    if len(frame) < tcp_off + header_len:
        raise DecodeError("frame truncated inside the TCP options")
    options = _options(frame[tcp_off + _TCP_MIN : tcp_off + header_len])
    payload_len = tcp_total - header_len
    payload_start = tcp_off + header_len
    payload = frame[payload_start : payload_start + payload_len]
    return Packet(
        timestamp=timestamp,
        wall_time=wall_time,
        interface=interface,
        link_type=link_type,
        ip_version=ip_version,
        src=src,
        dst=dst,
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        # Only the eight classic control bits; the low nibble of the byte before (AE/NS and
        # reserved bits) is not a Flags member.
        flags=Flags(off_flags & 0xFF),
        window=window,
        payload_len=payload_len,
        options=options,
        payload=payload,
        frame=frame,
        orig_len=max(orig_len, len(frame)),
    )


def _ipv4(frame: bytes, offset: int) -> tuple[int, str, str, int, int] | None:
    """Locate TCP in an IPv4 packet: (version, src, dst, tcp offset, tcp length) or None."""
    if len(frame) < offset + 20:
        return None
    ver_ihl = frame[offset]
    if ver_ihl >> 4 != 4:
        return None
    ihl = (ver_ihl & 0x0F) * 4
    (total_len,) = struct.unpack_from("!H", frame, offset + 2)
    (frag,) = struct.unpack_from("!H", frame, offset + 6)
    proto = frame[offset + 9]
    if proto != IPPROTO_TCP:
        return None
    if frag & 0x1FFF:
        return None  # a non-first fragment has no TCP header
    if ihl < 20:
        raise DecodeError(f"IPv4 header length {ihl} is below 20 bytes")
    if total_len == 0:
        # TSO/GRO "BIG TCP" super-packets may carry 0 here; the frame length is the truth.
        total_len = len(frame) - offset
    if total_len < ihl:
        raise DecodeError(f"IPv4 total length {total_len} shorter than its header ({ihl})")
    if len(frame) < offset + ihl:
        raise DecodeError("frame truncated inside the IPv4 options")
    src = socket.inet_ntop(socket.AF_INET, frame[offset + 12 : offset + 16])
    dst = socket.inet_ntop(socket.AF_INET, frame[offset + 16 : offset + 20])
    return 4, src, dst, offset + ihl, total_len - ihl


def _ipv6(frame: bytes, offset: int) -> tuple[int, str, str, int, int] | None:
    """Locate TCP in an IPv6 packet, walking the common extension headers."""
    if len(frame) < offset + _IPV6_LEN:
        return None
    if frame[offset] >> 4 != 6:
        return None
    (payload_len,) = struct.unpack_from("!H", frame, offset + 4)
    if payload_len == 0:
        payload_len = len(frame) - offset - _IPV6_LEN  # jumbogram / BIG TCP
    next_header = frame[offset + 6]
    src = socket.inet_ntop(socket.AF_INET6, frame[offset + 8 : offset + 24])
    dst = socket.inet_ntop(socket.AF_INET6, frame[offset + 24 : offset + 40])
    pos = offset + _IPV6_LEN
    end = pos + payload_len
    for _ in range(8):  # bounded: a loop of extension headers cannot spin
        if next_header == IPPROTO_TCP:
            return 6, src, dst, pos, end - pos
        if next_header in _IPV6_EXT_GENERIC or next_header == _IPV6_AH:
            if len(frame) < pos + 2:
                return None
            nh, hlen = frame[pos], frame[pos + 1]
            size = (hlen + 2) * 4 if next_header == _IPV6_AH else (hlen + 1) * 8
        elif next_header == _IPV6_FRAGMENT:
            if len(frame) < pos + 8:
                return None
            (frag,) = struct.unpack_from("!H", frame, pos + 2)
            if frag & 0xFFF8:
                return None  # non-first fragment
            nh, size = frame[pos], 8
        else:
            return None
        next_header = nh
        pos += size
        if pos > end:
            return None
    return None


def _options(raw: bytes) -> TcpOptions:
    """Parse TCP options leniently: a malformed option ends parsing, it never raises."""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted = False
    timestamps: tuple[int, int] | None = None
    sack_blocks: list[tuple[int, int]] = []
    other: list[int] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == _OPT_EOL:
            break
        if kind == _OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        length = raw[i + 1]
        if length < 2 or i + length > len(raw):
            break
        body = raw[i + 2 : i + length]
        if kind == _OPT_MSS and length == 4:
            (mss,) = struct.unpack("!H", body)
        elif kind == _OPT_WSCALE and length == 3:
            wscale = body[0]
        elif kind == _OPT_SACK_PERM and length == 2:
            sack_permitted = True
        elif kind == _OPT_TIMESTAMPS and length == 10:
            tsval, tsecr = struct.unpack("!II", body)
            timestamps = (tsval, tsecr)
        elif kind == _OPT_SACK and (length - 2) % 8 == 0:
            sack_blocks.extend(struct.unpack_from("!II", body, j) for j in range(0, len(body), 8))
        else:
            other.append(kind)
        i += length
    return TcpOptions(
        mss=mss,
        wscale=wscale,
        sack_permitted=sack_permitted,
        timestamps=timestamps,
        sack_blocks=tuple(sack_blocks),
        other=tuple(other),
    )
