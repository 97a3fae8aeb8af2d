"""Captured packets as conversations, with relative numbers and checks of the seq/ack arithmetic.

Pure: input is a list of :class:`~handshake_lab.capture.decode.Packet`, output records.

Who is the client: the end that sent a SYN without ACK (the first one, for a simultaneous
open); failing that, the end that did *not* send the SYN-ACK; failing that (capture started
mid-connection) the source of ``four_tuple`` when one is given, else the sender of the first
packet.

Relative numbers, as Wireshark shows them: each direction's ``seq`` minus that side's base,
and ``ack`` minus the *peer's* base, modulo 2**32 (so wrap-around near 2**32 reads 0, 1, 2 ...).
A side's base is the ISN from its SYN (or SYN-ACK); if its SYN was missed but the peer's
SYN-ACK was captured, that SYN-ACK's ack minus one (the same ISN); otherwise the first sequence
number it sent in the capture; if it sent nothing at all, the first
acknowledgment number the other side sent to it, minus one (so that ack reads 1, as after a
handshake). Bases are found in a first pass over the whole capture, so every line of a
conversation uses the same bases.

A 4-tuple can carry several connections in turn (a SYN that reuses a TIME_WAIT 4-tuple):
:func:`conversations` starts a new conversation when an end sends a SYN whose sequence number
differs from its earlier SYN (a SYN without ACK; a retransmitted SYN has the same number and
does not split).

Checks (:func:`check_handshake`, :func:`check_fin_acks`) compute the seed's claims from the
wire and return :class:`Check` records rather than raising, so a lab run can show each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from handshake_lab.capture.decode import Packet
from handshake_lab.tcp.segments import Flags, Segment, relative_seq, seq_add, seq_diff

__all__ = [
    "Check",
    "Conversation",
    "ConversationEntry",
    "Side",
    "check_fin_acks",
    "check_handshake",
    "conversation",
    "conversations",
]

Side = Literal["client", "server"]
Endpoint = tuple[str, int]
FourTuple = tuple[str, int, str, int]


@dataclass(frozen=True, slots=True)
class Check:
    """One arithmetic fact checked on the wire: a name, whether it held, and the numbers."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ConversationEntry:
    """One packet of a conversation, seen from the conversation's point of view."""

    packet: Packet
    sender: Side
    offset: float
    """Seconds since the conversation's first packet."""
    rel_seq: int
    rel_ack: int | None
    """Relative acknowledgment number; ``None`` when the ACK flag is not set."""

    @property
    def receiver(self) -> Side:
        return "server" if self.sender == "client" else "client"

    @property
    def relative_segment(self) -> Segment:
        """The packet's Segment with relative seq/ack (ack left raw when ACK is not set)."""
        seg = self.packet.segment
        return Segment(
            flags=seg.flags,
            seq=self.rel_seq,
            ack=seg.ack if self.rel_ack is None else self.rel_ack,
            payload_len=seg.payload_len,
            window=seg.window,
        )

    @property
    def label(self) -> str:
        """Compact arrow text: ``"SYN,ACK seq=0 ack=1"``, ``"PSH,ACK seq=1 ack=1 len=5"``."""
        p = self.packet
        parts = [p.flags.text(",") or "<none>", f"seq={self.rel_seq}"]
        if self.rel_ack is not None:
            parts.append(f"ack={self.rel_ack}")
        if p.payload_len:
            parts.append(f"len={p.payload_len}")
        return " ".join(parts)

    @property
    def description(self) -> str:
        """:attr:`label`, plus absolute seq, window and options on SYN segments.

        ``"SYN seq=0 (abs 3482), win=65495, mss=65495"``: the handshake is where the absolute
        ISN and the negotiated options matter; later lines stay short.
        """
        p = self.packet
        if Flags.SYN not in p.flags:
            return self.label
        text = f"{self.label} (abs {p.seq}), win={p.window}"
        opts = p.options
        if opts.mss is not None:
            text += f", mss={opts.mss}"
        if opts.wscale is not None:
            text += f", ws={opts.wscale}"
        if opts.sack_permitted:
            text += ", sack_perm"
        return text


@dataclass(frozen=True, slots=True)
class Conversation:
    """The packets of one TCP connection, in capture order, with client and server named."""

    client: Endpoint
    server: Endpoint
    client_base: int
    server_base: int
    client_isn_seen: bool
    """True if ``client_base`` is the ISN from a captured SYN, False if it is a fallback."""
    server_isn_seen: bool
    entries: tuple[ConversationEntry, ...]

    @property
    def start(self) -> float:
        return self.entries[0].packet.timestamp if self.entries else 0.0

    def endpoint(self, side: Side) -> Endpoint:
        return self.client if side == "client" else self.server

    def base(self, side: Side) -> int:
        return self.client_base if side == "client" else self.server_base

    def from_side(self, side: Side) -> list[ConversationEntry]:
        return [e for e in self.entries if e.sender == side]


def _key(p: Packet) -> frozenset[Endpoint]:
    return frozenset((p.src_endpoint, p.dst_endpoint))


def _is_syn(p: Packet) -> bool:
    return Flags.SYN in p.flags and Flags.ACK not in p.flags


def _split(packets: Sequence[Packet]) -> list[list[Packet]]:
    """Group by connection, in order of each connection's first packet."""
    groups: list[list[Packet]] = []
    current: dict[frozenset[Endpoint], tuple[list[Packet], dict[Endpoint, int]]] = {}
    for p in packets:
        key = _key(p)
        state = current.get(key)
        if state is not None and _is_syn(p):
            earlier = state[1].get(p.src_endpoint)
            if earlier is not None and earlier != p.seq:
                state = None  # the same end opens anew: a new connection on the same 4-tuple
        if state is None:
            state = ([], {})
            current[key] = state
            groups.append(state[0])
        if Flags.SYN in p.flags:
            state[1].setdefault(p.src_endpoint, p.seq)
        state[0].append(p)
    return groups


def _build(packets: Sequence[Packet], orient: FourTuple | None) -> Conversation:
    first = packets[0]
    client: Endpoint | None = None
    for p in packets:
        if _is_syn(p):
            client = p.src_endpoint
            break
    if client is None:
        for p in packets:
            if Flags.SYN in p.flags and Flags.ACK in p.flags:
                client = p.dst_endpoint
                break
    if client is None:
        client = (orient[0], orient[1]) if orient is not None else first.src_endpoint
    server = first.dst_endpoint if first.src_endpoint == client else first.src_endpoint

    def base_of(end: Endpoint) -> tuple[int, bool]:
        sent = [p for p in packets if p.src_endpoint == end]
        for p in sent:
            if Flags.SYN in p.flags:
                return p.seq, True
        for p in packets:
            if p.dst_endpoint == end and Flags.SYN in p.flags and Flags.ACK in p.flags:
                return seq_add(p.ack, -1), False  # the peer's SYN-ACK names our ISN + 1
        if sent:
            return sent[0].seq, False
        for p in packets:
            if p.dst_endpoint == end and Flags.ACK in p.flags:
                return seq_add(p.ack, -1), False
        return 0, False

    client_base, client_seen = base_of(client)
    server_base, server_seen = base_of(server)
    start = first.timestamp
    entries: list[ConversationEntry] = []
    for p in packets:
        sender: Side = "client" if p.src_endpoint == client else "server"
        own, peer = (
            (client_base, server_base) if sender == "client" else (server_base, client_base)
        )
        entries.append(
            ConversationEntry(
                packet=p,
                sender=sender,
                offset=p.timestamp - start,
                rel_seq=relative_seq(p.seq, own),
                rel_ack=relative_seq(p.ack, peer) if Flags.ACK in p.flags else None,
            )
        )
    return Conversation(
        client=client,
        server=server,
        client_base=client_base,
        server_base=server_base,
        client_isn_seen=client_seen,
        server_isn_seen=server_seen,
        entries=tuple(entries),
    )


def conversations(packets: Iterable[Packet]) -> list[Conversation]:
    """Every connection in ``packets``, in order of first appearance."""
    return [_build(group, None) for group in _split(list(packets))]


def conversation(packets: Iterable[Packet], four_tuple: FourTuple | None = None) -> Conversation:
    """The first connection in ``packets`` (or the first on ``four_tuple``, either direction).

    ``four_tuple`` is ``(src, src_port, dst, dst_port)``; when no SYN shows who connected, its
    source is taken as the client. Raises ``ValueError`` if no packet matches.
    """
    for group in _split(list(packets)):
        if four_tuple is None or _key(group[0]) == frozenset(
            ((four_tuple[0], four_tuple[1]), (four_tuple[2], four_tuple[3]))
        ):
            return _build(group, four_tuple)
    where = "" if four_tuple is None else f" on {four_tuple}"
    raise ValueError(f"no TCP packets{where} in the capture")


# -- checks of the seed's arithmetic ----------------------------------------------------------


def check_handshake(packets: Iterable[Packet], four_tuple: FourTuple | None = None) -> list[Check]:
    """The three-way handshake's numbers, from the wire.

    SYN with seq=j from the client; SYN-ACK from the server with ack=j+1 (and its own seq=k);
    the client's next segment acknowledges k+1 and does *not* carry SYN (the seed writes
    "SYN(ack=k+1)": it is a plain ACK). Missing segments give failed checks, never errors.
    """
    conv = _conversation_or_none(packets, four_tuple)
    if conv is None:
        return [Check("handshake.syn", False, "no TCP packets captured")]
    entries = conv.entries
    syn_i = next(
        (i for i, e in enumerate(entries) if e.sender == "client" and _is_syn(e.packet)), None
    )
    if syn_i is None:
        return [Check("handshake.syn", False, "no SYN from the client was captured")]
    syn = entries[syn_i].packet
    j = syn.seq
    checks = [Check("handshake.syn", True, f"client SYN seq=j={j}")]

    synack_i = next(
        (
            i
            for i in range(syn_i + 1, len(entries))
            if entries[i].sender == "server"
            and Flags.SYN in entries[i].packet.flags
            and Flags.ACK in entries[i].packet.flags
        ),
        None,
    )
    if synack_i is None:
        refusal = next(
            (
                e.packet
                for e in entries[syn_i + 1 :]
                if e.sender == "server" and Flags.RST in e.packet.flags
            ),
            None,
        )
        if refusal is not None and Flags.ACK in refusal.flags and refusal.ack == seq_add(j, 1):
            # Nothing listened: RFC 9293 3.10.7.1, a SYN to a CLOSED port gets <SEQ=0><ACK=j+1>
            # <CTL=RST,ACK>. A refused connection, not a missing SYN-ACK.
            detail = f"SYN answered by RST,ACK ack={refusal.ack}, j+1: refused, nothing listened"
            checks.append(Check("handshake.refused", True, detail))
            return checks
        checks.append(Check("handshake.synack_ack", False, "no SYN-ACK from the server"))
        return checks
    synack = entries[synack_i].packet
    k = synack.seq
    want = seq_add(j, 1)
    checks.append(
        Check(
            "handshake.synack_ack",
            synack.ack == want,
            f"SYN-ACK seq=k={k} ack={synack.ack}, expected j+1={want}"
            + ("" if synack.ack == want else f" (off by {seq_diff(synack.ack, want):+d})"),
        )
    )
    # The client's answer to the SYN-ACK: skip copies of its own SYN (same seq j), which it
    # retransmits while the SYN-ACK is held or lost (the handshake lab's netns form).
    third = next(
        (
            e
            for e in entries[synack_i + 1 :]
            if e.sender == "client"
            and not (
                Flags.SYN in e.packet.flags
                and Flags.ACK not in e.packet.flags
                and e.packet.seq == j
            )
        ),
        None,
    )
    if third is None:
        checks.append(Check("handshake.ack_ack", False, "no third segment from the client"))
        checks.append(Check("handshake.third_not_syn", False, "no third segment"))
        return checks
    tp = third.packet
    want_k = seq_add(k, 1)
    if Flags.RST in tp.flags:
        # The "client" had no such connection (an old duplicate SYN): it resets the SYN-ACK
        # instead of acknowledging it. RFC 9293 3.5: the RST's seq is the SYN-ACK's ack.
        ok = tp.seq == synack.ack
        checks.append(
            Check(
                "handshake.reset",
                ok,
                f"third segment RST seq={tp.seq}: the SYN's sender has no such connection"
                + ("; seq equals the SYN-ACK's ack" if ok else f", expected {synack.ack}"),
            )
        )
        return checks
    acked = Flags.ACK in tp.flags and tp.ack == want_k
    checks.append(
        Check(
            "handshake.ack_ack",
            acked,
            f"third segment {tp.flags.text(',')} ack={tp.ack}, expected k+1={want_k}"
            + ("" if Flags.ACK in tp.flags else " (ACK flag not set)"),
        )
    )
    checks.append(
        Check(
            "handshake.third_not_syn",
            Flags.SYN not in tp.flags,
            f"third segment flags {tp.flags.text(',')}: "
            + ("no SYN, as it must be" if Flags.SYN not in tp.flags else "SYN is set"),
        )
    )
    return checks


def check_fin_acks(packets: Iterable[Packet], four_tuple: FourTuple | None = None) -> list[Check]:
    """Each FIN is acknowledged by the peer with ack = (FIN's sequence number) + 1.

    A FIN that also carries data occupies the number after its data, so the expected ack is
    the segment's ``next_seq`` (``u + 1`` for a bare FIN with seq=u). Retransmitted FINs are
    checked once. No FIN captured gives an empty list.
    """
    conv = _conversation_or_none(packets, four_tuple)
    if conv is None:
        return []
    checks: list[Check] = []
    seen: set[tuple[Side, int]] = set()
    entries = conv.entries
    for i, entry in enumerate(entries):
        p = entry.packet
        if Flags.FIN not in p.flags or (entry.sender, p.seq) in seen:
            continue
        seen.add((entry.sender, p.seq))
        fin_seq = seq_add(p.seq, p.payload_len)  # the number the FIN itself occupies
        want = p.segment.next_seq
        acker = next(
            (
                e
                for e in entries[i + 1 :]
                if e.sender == entry.receiver
                and Flags.ACK in e.packet.flags
                and seq_diff(e.packet.ack, want) >= 0
            ),
            None,
        )
        rel_fin = relative_seq(fin_seq, conv.base(entry.sender))
        name = f"fin.{entry.sender}"
        # The seed's names: the client's FIN is seq=u, the server's seq=w.
        var = "u" if entry.sender == "client" else "w"
        if acker is None:
            checks.append(
                Check(
                    name, False, f"{entry.sender} FIN {var}={fin_seq} (rel {rel_fin}) never ACKed"
                )
            )
            continue
        ack = acker.packet.ack
        checks.append(
            Check(
                name,
                ack == want,
                f"{entry.sender} FIN seq={var}={fin_seq} (rel {rel_fin}) -> {entry.receiver} "
                f"ack={ack} (rel {acker.rel_ack}), expected {var}+1={want}",
            )
        )
    return checks


def _conversation_or_none(
    packets: Iterable[Packet], four_tuple: FourTuple | None
) -> Conversation | None:
    try:
        return conversation(packets, four_tuple)
    except ValueError:
        return None
