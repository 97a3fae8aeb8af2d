"""The psutil backend: ``psutil.net_connections(kind="tcp")``, system-wide.

Why the system-wide call and not ``psutil.Process().net_connections()``: the per-process call
walks the process's file descriptors, so a socket disappears from it the moment ``close()``
drops the descriptor, while the kernel keeps the connection alive for FIN_WAIT2, LAST_ACK and
the 60 s of TIME_WAIT. Those teardown states are half of what the labs teach. The system-wide
call reads the kernel's table (``/proc/net/tcp`` and ``tcp6`` on Linux) and sees them; it
reports ``pid=None`` for sockets no process owns (TIME_WAIT, orphaned FIN_WAIT2) and, for an
unprivileged user, for sockets of other users' processes. It only sees the calling thread's
network namespace.

psutil is the second opinion next to ``ss``, and the only source here that knows which process
owns a socket (``pid``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

import psutil

from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import address, to_state
from handshake_lab.observe.base import Address, SocketRecord, port_matches

SOURCE = "psutil"


class Connection(Protocol):
    """The fields of psutil's ``sconn`` that we read (tests pass their own tuples)."""

    @property
    def laddr(self) -> tuple[str, int] | tuple[()]: ...
    @property
    def raddr(self) -> tuple[str, int] | tuple[()]: ...
    @property
    def status(self) -> str: ...
    @property
    def pid(self) -> int | None: ...


def _to_address(value: tuple[str, int] | tuple[()]) -> Address | None:
    """psutil's ``addr(ip, port)``, or ``()`` when there is no address (a listener's peer)."""
    if not value:
        return None
    host, port = value
    return address(host, port)


def record_from_connection(conn: Connection) -> SocketRecord | None:
    """One psutil connection as a ``SocketRecord``; ``None`` if it has no local port.

    psutil gives ``laddr == ()`` when the local port is 0 (a socket not yet bound to a port):
    it cannot be part of any 4-tuple we reconcile, so it is left out.
    """
    context = f"psutil connection {conn!r}"
    state = to_state(SOURCE, conn.status, context=context)
    try:
        local = _to_address(conn.laddr)
        remote = _to_address(conn.raddr)
    except ValueError as error:
        raise ObserverError(f"cannot read {context}: {error}") from error
    if local is None:
        return None
    return SocketRecord(
        source=SOURCE,
        state=state,
        raw_state=conn.status,
        local=local,
        remote=remote,
        pid=conn.pid,
    )


class PsutilObserver:
    """Read the socket table through psutil (system-wide, this network namespace)."""

    name = "psutil"

    def __init__(self, *, kind: str = "tcp") -> None:
        """``kind="tcp4"`` reads only IPv4 (/proc/net/tcp): half the cost of ``"tcp"``
        (measured 4.5 vs 9.2 ms with 66 processes), for callers whose sockets are all IPv4."""
        if kind not in {"tcp", "tcp4", "tcp6"}:
            raise ValueError(f"kind must be tcp, tcp4 or tcp6, not {kind!r}")
        self.kind = kind

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        try:
            connections = psutil.net_connections(kind=self.kind)
        except psutil.AccessDenied as error:
            raise ObserverError(
                "psutil: access denied reading the socket table (try ss, or run as root)"
            ) from error
        except psutil.Error as error:
            raise ObserverError(f"psutil failed to read the socket table: {error}") from error
        except OSError as error:
            raise ObserverError(
                f"psutil failed to read the socket table: {error.strerror or error}"
            ) from error
        records: list[SocketRecord] = []
        for conn in connections:
            record = record_from_connection(conn)
            if record is not None and port_matches(record, ports):
                records.append(record)
        return records


__all__ = ["PsutilObserver", "record_from_connection"]
