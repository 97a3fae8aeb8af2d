"""Each source's spelling of TCP states (and hosts), mapped onto the one vocabulary.

Every observer reads the same kernel table, but each tool spells the states its own way:
``ss`` prints ``ESTAB`` and ``FIN-WAIT-2``, psutil says ``FIN_WAIT2``, ``/proc/net/tcp`` prints
the hex value of ``include/net/tcp_states.h``. Those spellings live here, in one table per
source, and nowhere else. A spelling that is not in its table raises ``UnknownStateError``: a
new tool version or a misparse must be loud, because a lab that silently maps an unknown
state to ``None`` (or to a guess) would tell the student something the kernel never said.

Verified against the sources of the tools we read:

- ``ss`` (iproute2 6.1, ``misc/ss.c``, ``sstate_name``) prints ``UNCONN`` for ``TCP_CLOSE``
  and has no spelling for ``NEW_SYN_RECV``: the kernel's sock_diag reports request sockets
  with ``idiag_state = TCP_SYN_RECV``, so a half-open server side shows as ``SYN-RECV``.
  Its table also has ``UNKNOWN`` (index 0, never a TCP state): that raises here too.
- psutil's ``CONN_*`` values; ``CONN_NONE`` (``"NONE"``) is psutil's "no state" for non-TCP
  sockets. It is not a TCP state, so it raises instead of becoming ``None``.
- ``/proc/net/tcp`` prints ``%02X`` of the tcp_states.h number: ``"01"`` .. ``"0B"``. The
  table also holds ``"0C"`` (``NEW_SYN_RECV``) because it is a tcp_states.h value, although
  the kernel prints request sockets in this file as ``"03"`` (``get_openreq4``).

Host spellings are normalised here as well (``address``), so every source agrees on what a
4-tuple looks like: an IPv4-mapped IPv6 host (``::ffff:127.0.0.1``) becomes ``127.0.0.1``,
IPv6 is compressed (``::1``), interface suffixes (``%lo``) are dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType

from handshake_lab.errors import ObserverError
from handshake_lab.observe.base import Address
from handshake_lab.tcp.states import TcpState


class UnknownStateError(ObserverError):
    """A source printed a state spelling that is not in its alias table."""

    def __init__(self, source: str, spelling: str, *, context: str | None = None) -> None:
        self.source = source
        self.spelling = spelling
        self.context = context
        message = f"{source} reported an unknown TCP state spelling {spelling!r}"
        if context is not None:
            message += f" in {context}"
        super().__init__(message)


SS: Mapping[str, TcpState] = MappingProxyType(
    {
        "ESTAB": TcpState.ESTABLISHED,
        "SYN-SENT": TcpState.SYN_SENT,
        "SYN-RECV": TcpState.SYN_RECV,
        "FIN-WAIT-1": TcpState.FIN_WAIT1,
        "FIN-WAIT-2": TcpState.FIN_WAIT2,
        "TIME-WAIT": TcpState.TIME_WAIT,
        "UNCONN": TcpState.CLOSE,
        "CLOSE-WAIT": TcpState.CLOSE_WAIT,
        "LAST-ACK": TcpState.LAST_ACK,
        "LISTEN": TcpState.LISTEN,
        "CLOSING": TcpState.CLOSING,
    }
)
"""``ss`` spellings (iproute2 ``sstate_name``)."""

PSUTIL: Mapping[str, TcpState] = MappingProxyType(
    {
        "ESTABLISHED": TcpState.ESTABLISHED,
        "SYN_SENT": TcpState.SYN_SENT,
        "SYN_RECV": TcpState.SYN_RECV,
        "FIN_WAIT1": TcpState.FIN_WAIT1,
        "FIN_WAIT2": TcpState.FIN_WAIT2,
        "TIME_WAIT": TcpState.TIME_WAIT,
        "CLOSE": TcpState.CLOSE,
        "CLOSE_WAIT": TcpState.CLOSE_WAIT,
        "LAST_ACK": TcpState.LAST_ACK,
        "LISTEN": TcpState.LISTEN,
        "CLOSING": TcpState.CLOSING,
    }
)
"""psutil ``CONN_*`` string values (spelled out so this module does not import psutil)."""

PROC: Mapping[str, TcpState] = MappingProxyType(
    {f"{state.value:02X}": state for state in TcpState}
)
"""``/proc/net/tcp`` ``st`` column: the tcp_states.h number in upper-case hex."""

TABLES: Mapping[str, Mapping[str, TcpState]] = MappingProxyType(
    {"ss": SS, "psutil": PSUTIL, "proc": PROC}
)
"""Every alias table, by source name."""


def to_state(source: str, spelling: str, *, context: str | None = None) -> TcpState:
    """Translate ``spelling`` from ``source`` (a key of ``TABLES``); raise if unknown."""
    try:
        return TABLES[source][spelling]
    except KeyError:
        raise UnknownStateError(source, spelling, context=context) from None


def from_ss(spelling: str) -> TcpState:
    """``"FIN-WAIT-2"`` -> ``TcpState.FIN_WAIT2``; raise ``UnknownStateError`` otherwise."""
    return to_state("ss", spelling)


def from_psutil(spelling: str) -> TcpState:
    """``"FIN_WAIT2"`` -> ``TcpState.FIN_WAIT2``; ``"NONE"`` and unknowns raise."""
    return to_state("psutil", spelling)


def from_proc(spelling: str) -> TcpState:
    """``"05"`` -> ``TcpState.FIN_WAIT2``; raise ``UnknownStateError`` otherwise."""
    return to_state("proc", spelling)


def normalise_host(host: str) -> str:
    """Canonical text of an IP address; IPv4-mapped IPv6 becomes IPv4.

    Raises ``ValueError`` if ``host`` is not an IP address (callers translate it).
    """
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_mapped(host: str) -> bool:
    """True for an IPv4-mapped IPv6 address in any spelling (``::ffff:127.0.0.1``,
    ``::FFFF:7f00:1``); False for anything else, including text that is no address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None


def address(host: str, port: int) -> Address:
    """An ``Address`` with a normalised host; ``ValueError`` for a bad host or port.

    The one normaliser every source goes through (ss, psutil, the agent; netlink builds the
    same from bytes): an IPv4-mapped host becomes its IPv4 address with ``mapped`` set, so the
    4-tuples of all sources match and the views can still print what the kernel said."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0..65535")
    return Address(normalise_host(host), port, mapped=is_mapped(host))
