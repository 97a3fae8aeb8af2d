"""What every observer returns, and the interface every observer implements.

An observer answers one question: "which TCP sockets does the kernel have right now, and in
which state?". Backends differ in how they ask (``ss``, psutil, netlink, a fake for tests) and
in what they can see, but they all return ``SocketRecord`` objects in the one state vocabulary
(``TcpState``). Mapping each backend's spelling onto it happens in ``observe.aliases``.
"""

from __future__ import annotations

import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from handshake_lab.tcp.states import TcpState


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One end of a 4-tuple. ``host`` is normalised: IPv4-mapped IPv6 becomes plain IPv4.

    ``mapped`` remembers that the source spelled it IPv4-mapped (``::ffff:127.0.0.1``): the end
    of an IPv6 socket that talks IPv4 (a dual-stack listener's connection from an IPv4 client).
    It takes no part in comparing, hashing or ``str``: the 4-tuple is the same connection
    whatever family the socket on this end has, so sources and the wire (where the segments
    are plain IPv4) match by it. ``shown`` is the spelling ss and psutil print.
    """

    host: str
    port: int
    mapped: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def shown(self) -> str:
        """As ss prints it: ``[::ffff:127.0.0.1]:P`` for a mapped end, else ``str``."""
        return mapped_text(str(self), mapped=self.mapped)


MAPPED_PREFIX = "::ffff:"
"""How ss, psutil and Python spell an IPv4-mapped IPv6 address (RFC 4291 2.5.5.2)."""


def mapped_text(endpoint: str, *, mapped: bool) -> str:
    """``127.0.0.1:80`` as the end of an IPv6 socket prints it, ``[::ffff:127.0.0.1]:80``, when
    ``mapped``; anything else unchanged. The one place a view turns the normalised 4-tuple of
    the record back into the kernel's spelling."""
    if not mapped or endpoint.startswith("["):
        return endpoint
    host, _, port = endpoint.rpartition(":")
    return f"[{MAPPED_PREFIX}{host}]:{port}"


def family_of(host: str) -> socket.AddressFamily:
    """The socket family for a literal address: AF_INET6 if it is an IPv6 one (``::1``)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass(frozen=True, slots=True)
class Timer:
    """A kernel socket timer as ``ss -o`` shows it: name, seconds left, retransmits/probes."""

    name: str
    remaining: float
    count: int


@dataclass(frozen=True, slots=True)
class SocketRecord:
    """One TCP socket as one source reported it.

    ``remote`` is ``None`` for a socket with no peer (a listener). ``raw_state`` is the source's
    own spelling, kept for the output so a reader can check the translation.
    """

    source: str
    state: TcpState
    raw_state: str
    local: Address
    remote: Address | None
    timer: Timer | None = None
    pid: int | None = None
    recv_q: int | None = None
    send_q: int | None = None

    @property
    def key(self) -> tuple[Address, Address | None]:
        """The 4-tuple used to reconcile sources."""
        return (self.local, self.remote)


@runtime_checkable
class Observer(Protocol):
    """A way to read the kernel's TCP socket table."""

    name: str

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        """Return the TCP sockets whose local or remote port is in ``ports`` (all if None).

        Raises ``ObserverError`` if the table cannot be read.
        """
        ...


def port_matches(record: SocketRecord, ports: Collection[int] | None) -> bool:
    """True if the record's local or remote port is one of ``ports`` (or ports is None)."""
    if ports is None:
        return True
    if record.local.port in ports:
        return True
    return record.remote is not None and record.remote.port in ports
