"""The one state vocabulary: Linux's TCP state names.

Values are the numbers of ``include/net/tcp_states.h`` (what ``/proc/net/tcp`` prints in hex and
what netlink sock_diag returns in ``idiag_state``). Every observer maps its own spelling onto this
enum through an alias table at its edge; nothing else in the program spells states its own way.
RFC 9293 names (SYN-RECEIVED, FIN-WAIT-1, CLOSED, ...) are available as ``rfc_name`` for the
explanations.
"""

from __future__ import annotations

from enum import IntEnum


class TcpState(IntEnum):
    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12

    @property
    def rfc_name(self) -> str:
        """The RFC 9293 spelling of this state."""
        return _RFC_NAMES[self]

    @classmethod
    def from_name(cls, name: str) -> TcpState:
        """Parse a Linux state name exactly (``"FIN_WAIT2"``); raise ``KeyError`` otherwise."""
        return cls[name]


def parse_state(word: str) -> TcpState | None:
    """A state a person typed, in any common spelling: Linux (``FIN_WAIT2``), ss
    (``FIN-WAIT-2``, ``ESTAB``, ``UNCONN``) or RFC 9293 (``FIN-WAIT-1``, ``SYN-RECEIVED``,
    ``CLOSED``), any case, spaces or hyphens for underscores; None if it is none of them.
    (Observers parse their sources' output strictly, with the tables in ``observe.aliases``.)"""
    key = word.strip().upper().replace("-", "_").replace(" ", "_")
    key = _TYPED_ALIASES.get(key, key)
    return TcpState.__members__.get(key)


_TYPED_ALIASES: dict[str, str] = {
    "ESTAB": "ESTABLISHED",
    "FIN_WAIT_1": "FIN_WAIT1",
    "FIN_WAIT_2": "FIN_WAIT2",
    "SYN_RECEIVED": "SYN_RECV",
    "CLOSED": "CLOSE",
    "UNCONN": "CLOSE",
}

_RFC_NAMES: dict[TcpState, str] = {
    TcpState.ESTABLISHED: "ESTABLISHED",
    TcpState.SYN_SENT: "SYN-SENT",
    TcpState.SYN_RECV: "SYN-RECEIVED",
    TcpState.FIN_WAIT1: "FIN-WAIT-1",
    TcpState.FIN_WAIT2: "FIN-WAIT-2",
    TcpState.TIME_WAIT: "TIME-WAIT",
    TcpState.CLOSE: "CLOSED",
    TcpState.CLOSE_WAIT: "CLOSE-WAIT",
    TcpState.LAST_ACK: "LAST-ACK",
    TcpState.LISTEN: "LISTEN",
    TcpState.CLOSING: "CLOSING",
    # Linux's request socket: the RFC has no separate state, it is SYN-RECEIVED.
    TcpState.NEW_SYN_RECV: "SYN-RECEIVED",
}
