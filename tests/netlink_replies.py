"""sock_diag replies packed by hand, for the tests of the netlink reader and of ``watch``.

Replies are packed here from the layouts in ``include/uapi/linux/inet_diag.h`` and
``netlink.h``, independently of the reader's own ``Struct`` objects, so a wrong offset in the
reader shows up as a wrong field rather than agreeing with itself.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3


def nlmsg(kind: int, payload: bytes, seq: int = 1, flags: int = 2) -> bytes:
    """One netlink message, padded to 4 bytes like the kernel does."""
    header = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 4242)
    return header + payload + bytes(-len(payload) % 4)


def v4(host: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, host) + bytes(12)


def v6(host: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, host)


def diag_msg(
    *,
    family: int = socket.AF_INET,
    state: int = 1,
    timer: int = 0,
    retrans: int = 0,
    sport: int = 8000,
    dport: int = 40000,
    src: bytes = v4("127.0.0.1"),
    dst: bytes = v4("127.0.0.1"),
    cookie: int = 0x1_0000_0002,
    expires: int = 0,
    rqueue: int = 0,
    wqueue: int = 0,
    uid: int = 1000,
    inode: int = 77,
    attributes: bytes = b"",
) -> bytes:
    """An ``inet_diag_msg`` (72 bytes) followed by optional attributes."""
    head = struct.pack("=BBBB", family, state, timer, retrans)
    ports = struct.pack(">HH", sport, dport)
    tail = struct.pack(
        "=IIIIIIII", 0, cookie & 0xFFFFFFFF, cookie >> 32, expires, rqueue, wqueue, uid, inode
    )
    return head + ports + src + dst + tail + attributes


def done(seq: int = 1, code: int = 0) -> bytes:
    return nlmsg(NLMSG_DONE, struct.pack("=i", code), seq)


def error(code: int, seq: int = 1) -> bytes:
    return nlmsg(NLMSG_ERROR, struct.pack("=i", -code) + bytes(16), seq, flags=0)


def dump_reply(payloads: Iterable[bytes], seq: int = 1, kind: int = TCPDIAG_GETSOCK) -> bytes:
    """A whole dump: one record message per ``inet_diag_msg``, then NLMSG_DONE."""
    return b"".join(nlmsg(kind, payload, seq) for payload in payloads) + done(seq)


def with_seq(reply: bytes, seq: int) -> bytes:
    """``reply`` with every message's sequence number set to ``seq``."""
    out = bytearray(reply)
    offset = 0
    while offset + 16 <= len(out):
        (length,) = struct.unpack_from("=I", out, offset)
        struct.pack_into("=I", out, offset + 8, seq)
        offset += max(16, (length + 3) & ~3)
    return bytes(out)


def request_seq(request: bytes) -> int:
    seq: int = struct.unpack_from("=I", request, 8)[0]
    return seq


class ReplaySocket:
    """Stands in for the netlink socket: answers each request with the next recorded reply,
    its sequence numbers set to the request's; ``recv_into`` hands it out in ``chunk``-byte
    datagrams (whole messages, as the kernel sends them)."""

    def __init__(self, replies: Iterable[bytes], chunk: int = 32768) -> None:
        self.replies = list(replies)
        self.chunk = chunk
        self.pending: list[bytes] = []
        self.requests: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.requests.append(data)
        reply = with_seq(self.replies.pop(0), request_seq(data))
        self.pending = _datagrams(reply, self.chunk)
        return len(data)

    def recv_into(self, buffer: bytearray) -> int:
        data = self.pending.pop(0) if self.pending else b""
        buffer[: len(data)] = data
        return len(data)

    def settimeout(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


def _datagrams(reply: bytes, size: int) -> list[bytes]:
    """Split ``reply`` between messages into datagrams of at most ``size`` bytes each."""
    out: list[bytes] = []
    start = offset = 0
    while offset + 16 <= len(reply):
        (length,) = struct.unpack_from("=I", reply, offset)
        step = max(16, (length + 3) & ~3)
        if offset + step - start > size and offset > start:
            out.append(reply[start:offset])
            start = offset
        offset += step
    out.append(reply[start:])
    return out
