"""A scripted observer for unit tests of everything above ``observe`` (runner, watch, render).

Unit tests never open sockets, so they need an observer whose answers are chosen by the test:
``FakeObserver`` returns a settable list of records, or plays a script of snapshots (one per
``snapshot()`` call; the last one stays, as a kernel state does), and can raise an
``ObserverError`` at a chosen call. It records the ``ports`` of every call so a test can check
what was asked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence

from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import address
from handshake_lab.observe.base import Address, SocketRecord, Timer, port_matches
from handshake_lab.tcp.states import TcpState


def parse_address(text: str) -> Address:
    """``"127.0.0.1:8000"`` or ``"[::1]:8000"`` -> ``Address`` (test convenience)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return address(host.removeprefix("[").removesuffix("]"), int(port))


def make_record(
    source: str,
    state: TcpState,
    local: Address | str,
    remote: Address | str | None = None,
    *,
    raw_state: str | None = None,
    timer: Timer | None = None,
    pid: int | None = None,
) -> SocketRecord:
    """A ``SocketRecord`` for tests; addresses may be written ``"127.0.0.1:8000"``."""
    return SocketRecord(
        source=source,
        state=state,
        raw_state=raw_state if raw_state is not None else state.name,
        local=parse_address(local) if isinstance(local, str) else local,
        remote=parse_address(remote) if isinstance(remote, str) else remote,
        timer=timer,
        pid=pid,
    )


Scripted = Sequence[SocketRecord] | ObserverError


class FakeObserver:
    """An ``Observer`` whose snapshots are set by the test."""

    def __init__(
        self,
        name: str = "fake",
        records: Iterable[SocketRecord] = (),
        *,
        script: Iterable[Scripted] = (),
    ) -> None:
        self.name = name
        self.records: list[SocketRecord] = list(records)
        self.calls: list[frozenset[int] | None] = []
        self._script: deque[Scripted] = deque(script)

    def push(self, *snapshots: Scripted) -> None:
        """Queue snapshots (or errors) for the next calls, one per call."""
        self._script.extend(snapshots)

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        self.calls.append(None if ports is None else frozenset(ports))
        if self._script:
            step = self._script.popleft()
            if isinstance(step, ObserverError):
                raise step
            self.records = list(step)
        return [record for record in self.records if port_matches(record, ports)]


__all__ = ["FakeObserver", "make_record", "parse_address"]
