"""TCP header flags, segments and sequence-number arithmetic (pure, no I/O).

Sequence numbers live in a 32-bit circular space (RFC 9293 section 3.4): every addition is
modulo 2**32 and "before/after" is decided on the signed 32-bit difference, the way Linux's
``before()``/``after()`` do it. SYN and FIN each occupy one sequence number, which is why the
peer acknowledges ``seq + 1`` for a segment that carries no data at all.

Relative numbers are what Wireshark shows: a side's sequence numbers minus its initial
sequence number (ISN), again modulo 2**32, so a capture reads 0, 1, 1, ... whatever random ISN
the kernel picked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntFlag
from typing import Final

SEQ_SPACE: Final = 2**32
"""Size of the sequence-number space; all sequence arithmetic is modulo this."""

_SEQ_HALF: Final = 2**31


class Flags(IntFlag):
    """TCP header control bits with their wire values (RFC 9293 3.1, RFC 3168 for ECE/CWR)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80

    def text(self, sep: str = "+") -> str:
        """Names of the set bits, lowest bit first as Wireshark lists them ("SYN+ACK").

        An empty flag set gives the empty string.
        """
        return sep.join(flag.name for flag in Flags if flag in self and flag.name is not None)

    @classmethod
    def from_text(cls, text: str) -> Flags:
        """Parse "SYN,ACK", "syn+ack", "FIN|ACK" or "RST ACK"; unknown names raise ValueError.

        The empty string (or only separators) is the empty flag set.
        """
        result = cls(0)
        for name in re.split(r"[\s,+|]+", text.strip()):
            if not name:
                continue
            try:
                result |= cls[name.upper()]
            except KeyError:
                raise ValueError(f"unknown TCP flag {name!r} in {text!r}") from None
        return result


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value < SEQ_SPACE:
        raise ValueError(f"{name} must be in [0, 2**32), got {value}")


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` in sequence space (n may be negative)."""
    return (seq + n) % SEQ_SPACE


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in sequence space, in [-2**31, 2**31)."""
    return (a - b + _SEQ_HALF) % SEQ_SPACE - _SEQ_HALF


def seq_lt(a: int, b: int) -> bool:
    """True if ``a`` comes before ``b`` in sequence space (Linux ``before(a, b)``)."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    """True if ``a`` is ``b`` or comes before it in sequence space."""
    return seq_diff(a, b) <= 0


def relative_seq(seq: int, isn: int) -> int:
    """Wireshark-style relative number: ``seq - isn`` modulo 2**32 (the ISN itself is 0)."""
    _check_u32("seq", seq)
    _check_u32("isn", isn)
    return (seq - isn) % SEQ_SPACE


def absolute_seq(relative: int, isn: int) -> int:
    """Inverse of :func:`relative_seq`: the on-the-wire number for a relative one."""
    _check_u32("isn", isn)
    return (isn + relative) % SEQ_SPACE


@dataclass(frozen=True, slots=True)
class Segment:
    """The parts of one TCP segment that the lessons talk about.

    ``seq`` and ``ack`` are raw 32-bit header values; ``ack`` only means something when
    ``Flags.ACK`` is set. ``window`` is the raw 16-bit header field (unscaled).
    """

    flags: Flags
    seq: int
    ack: int
    payload_len: int
    window: int = 0

    def __post_init__(self) -> None:
        _check_u32("seq", self.seq)
        _check_u32("ack", self.ack)
        if self.payload_len < 0:
            raise ValueError(f"payload_len must be >= 0, got {self.payload_len}")
        if not 0 <= self.window < 2**16:
            raise ValueError(f"window must be in [0, 65536), got {self.window}")

    @property
    def seg_len(self) -> int:
        """Sequence space this segment occupies: payload bytes, plus one each for SYN and FIN."""
        return self.payload_len + (Flags.SYN in self.flags) + (Flags.FIN in self.flags)

    @property
    def next_seq(self) -> int:
        """The sequence number after this segment: what the peer will acknowledge."""
        return seq_add(self.seq, self.seg_len)

    @property
    def flags_text(self) -> str:
        """Flag names as captures list them, e.g. ``"SYN,ACK"``."""
        return self.flags.text(",")

    def relative_to(self, isn: int, peer_isn: int) -> Segment:
        """This segment with Wireshark-style relative numbers.

        ``seq`` is made relative to the sender's ISN, ``ack`` to the receiver's (``peer_isn``);
        ``ack`` is left as is when the ACK flag is not set, since it carries no meaning then.
        """
        ack = relative_seq(self.ack, peer_isn) if Flags.ACK in self.flags else self.ack
        return Segment(
            flags=self.flags,
            seq=relative_seq(self.seq, isn),
            ack=ack,
            payload_len=self.payload_len,
            window=self.window,
        )
