"""Turn successive socket-table snapshots into state transitions. Pure: no kernel, no clock.

Theory of operation: ``watch`` reads the kernel's table again and again. Each read is a
snapshot (``list[SocketRecord]``) taken at a monotonic time the caller passes in. A socket is
identified by its 4-tuple (local, remote; ``remote`` is ``None`` for a listener), so comparing
two snapshots key by key yields three kinds of event:

- ``appeared``: a 4-tuple not seen in the previous snapshot (``old`` is ``None``);
- ``changed``: the same 4-tuple in another state (``old -> new``);
- ``disappeared``: a 4-tuple gone from the table (``new`` is ``None``).

Time in a state is measured between snapshots: ``in_old`` is the time from the first snapshot
that showed the socket in ``old`` to the one that shows it elsewhere, so its resolution is the
refresh interval, and a transition faster than one refresh (FIN_WAIT2 -> TIME_WAIT on loopback
takes microseconds) can be missed entirely: a snapshot is a sample, not a trace. Sockets
present in the FIRST snapshot were there before the watch began; their events say ``initial``
and the time in their first state is only a lower bound (``in_old_lower_bound``).

Filters (``WatchFilter``):

- ``ports``: only sockets with a local or remote port in the set (as ``port_matches``).
- ``pid``: only sockets the process owns. Ownership comes from ``record.pid`` or the
  ``owner`` function passed to ``update`` (the kernel table does not carry it). Once a socket
  was seen owned by the pid it stays followed to its end, because the kernel drops the owner
  when the process closes the socket, exactly when FIN_WAIT2 and TIME_WAIT begin.
- ``state``: only events that enter or leave that state, and only sockets in it are shown and
  counted. Every socket on the port is still tracked, so a socket leaving the state is reported
  as ``ESTABLISHED -> CLOSE_WAIT``, not as a disappearance.

A 4-tuple that repeats inside one snapshot (SO_REUSEPORT listeners on the same address) is
one socket here: the first record wins, as in ``observe.reconcile.index``.

Keys are plain tuples ``(local host, local port, remote host, remote port)``: hashing them
is C code, where hashing ``Address`` dataclasses calls Python per field; at 50 000 sockets per
refresh that is the difference between a few and a few dozen milliseconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from handshake_lab.observe.base import Address, SocketRecord
from handshake_lab.tcp.states import TcpState

Kind = Literal["appeared", "changed", "disappeared"]
Key = tuple[str, int, str | None, int | None]
"""(local host, local port, remote host or None, remote port or None)."""


def key_of(record: SocketRecord) -> Key:
    """The 4-tuple of ``record`` as a plain, cheaply hashed tuple."""
    remote = record.remote
    local = record.local
    if remote is None:
        return (local.host, local.port, None, None)
    return (local.host, local.port, remote.host, remote.port)


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which sockets to follow. ``None`` means no restriction."""

    ports: frozenset[int] | None = None
    pid: int | None = None
    state: TcpState | None = None

    def port_ok(self, record: SocketRecord) -> bool:
        ports = self.ports
        if ports is None or record.local.port in ports:
            return True
        return record.remote is not None and record.remote.port in ports


@dataclass(frozen=True, slots=True)
class Transition:
    """One observed change of one socket (see the module docstring for the three kinds)."""

    kind: Kind
    local: Address
    remote: Address | None
    old: TcpState | None
    """``None`` for ``appeared``."""
    new: TcpState | None
    """``None`` for ``disappeared``."""
    at: float
    """Monotonic time of the snapshot that showed the change."""
    in_old: float | None
    """Seconds the socket was seen in ``old``; ``None`` for ``appeared``."""
    in_old_lower_bound: bool
    """``in_old`` started at the first snapshot: the socket was in ``old`` before that."""
    pid: int | None
    """Owner, when known (remembered after the process closed the socket)."""
    initial: bool
    """An ``appeared`` event for a socket that was already there when the watch began."""
    record: SocketRecord
    """The latest record of the socket (for ``disappeared``: the last one seen)."""


@dataclass(slots=True)
class Tracked:
    """What the tracker knows about one socket now. Renderers read it; only the tracker writes."""

    record: SocketRecord
    state: TcpState
    since: float
    """Monotonic time of the first snapshot that showed ``state``."""
    since_start: bool
    """``since`` is the first snapshot: the socket was in ``state`` before the watch began."""
    pid: int | None
    generation: int
    """The refresh whose snapshot ``record`` comes from (the tracker's bookkeeping)."""
    changed_at: float | None = None
    """When the last transition of this socket was seen (``None``: none yet)."""
    previous: TcpState | None = None
    """The state before the last transition (``None``: none, or it appeared)."""


class Tracker:
    """Compute transitions between successive snapshots (see the module docstring)."""

    def __init__(self, watch_filter: WatchFilter | None = None) -> None:
        self.filter = watch_filter or WatchFilter()
        self._sockets: dict[Key, Tracked] = {}
        self._counts: Counter[TcpState] = Counter()
        """Tracked sockets per state, kept up to date event by event (``counts`` is O(1))."""
        self._last: float | None = None
        self.refreshes = 0

    def update(
        self,
        records: Iterable[SocketRecord],
        now: float,
        owner: Callable[[SocketRecord], int | None] | None = None,
    ) -> list[Transition]:
        """Take the next snapshot (read at monotonic time ``now``); return its transitions.

        ``owner`` gives the pid of a socket whose record carries none (the kernel table does
        not; ``watch`` reads ``/proc``). It is asked only while a socket's owner is unknown.
        Times must not go backwards (``ValueError``): a monotonic clock never does.
        """
        initial, generation = self._start(now)
        sockets = self._sockets
        before = len(sockets)
        events: list[Transition] = []
        kept = self._take(records, now, owner, initial, generation, events)
        if kept != before:  # some socket of the previous snapshot is gone
            gone = [key for key, entry in sockets.items() if entry.generation != generation]
            self._drop(gone, now, events)
        return events

    def update_changed(
        self,
        records: Iterable[SocketRecord],
        gone: Collection[Key],
        now: float,
        owner: Callable[[SocketRecord], int | None] | None = None,
    ) -> list[Transition]:
        """``update`` for a caller that already knows what differs from the last snapshot.

        ``records`` are the sockets of the new snapshot that appeared, changed, or must be
        looked at again (an unknown owner, a 4-tuple reported twice), in table order; ``gone``
        the 4-tuples no longer in the table. Every other tracked socket is taken as unchanged:
        it keeps its entry and its record, and ``owner`` is not asked about it. Given exactly
        that, the transitions are the ones ``update`` returns for the whole snapshot
        (``watch.delta`` reads the kernel that way; its tests compare both).
        """
        initial, generation = self._start(now)
        events: list[Transition] = []
        self._take(records, now, owner, initial, generation, events)
        if gone:
            sockets = self._sockets
            # In first-seen order, as ``update`` reports them: one pass over the keys, in C.
            ordered = list(filter(gone.__contains__, sockets)) if len(gone) > 1 else list(gone)
            self._drop([key for key in ordered if key in sockets], now, events)
        return events

    def _start(self, now: float) -> tuple[bool, int]:
        """Begin the next snapshot: (is it the first, its generation number)."""
        if self._last is not None and now < self._last:
            raise ValueError(f"snapshot time {now} is before the previous one ({self._last})")
        initial = self._last is None
        self._last = now
        self.refreshes += 1
        return initial, self.refreshes

    def _take(
        self,
        records: Iterable[SocketRecord],
        now: float,
        owner: Callable[[SocketRecord], int | None] | None,
        initial: bool,
        generation: int,
        events: list[Transition],
    ) -> int:
        """Apply ``records`` (appeared and changed events into ``events``); return how many
        sockets that were already tracked they contain."""
        want_pid = self.filter.pid
        only = self.filter.state
        ports = self.filter.ports
        sockets = self._sockets
        counts = self._counts
        kept = 0
        # The hot loop (50 000 iterations per refresh at the design load): locals only, the
        # key built inline, ONE dict probe per record; entries are updated in place and
        # stamped with the refresh number, so a stale stamp afterwards means "gone".
        for record in records:
            local = record.local
            remote = record.remote
            if (
                ports is not None
                and local.port not in ports
                and (remote is None or remote.port not in ports)
            ):
                continue
            if remote is None:
                key: Key = (local.host, local.port, None, None)
            else:
                key = (local.host, local.port, remote.host, remote.port)
            entry = sockets.get(key)
            if entry is not None and entry.generation == generation:
                continue  # the same 4-tuple twice in one snapshot: the first record wins
            pid = record.pid
            if pid is None and owner is not None and (entry is None or entry.pid is None):
                pid = owner(record)
            state = record.state
            if entry is None:
                if want_pid is not None and pid != want_pid:
                    continue
                sockets[key] = Tracked(record, state, now, initial, pid, generation)
                counts[state] += 1
                if only is None or state is only:
                    events.append(
                        Transition(
                            kind="appeared",
                            local=local,
                            remote=remote,
                            old=None,
                            new=state,
                            at=now,
                            in_old=None,
                            in_old_lower_bound=False,
                            pid=pid,
                            initial=initial,
                            record=record,
                        )
                    )
                continue
            kept += 1
            entry.generation = generation
            entry.record = record
            if pid is not None:
                entry.pid = pid
            if entry.state is not state:
                previous = entry.state
                if only is None or previous is only or state is only:
                    events.append(
                        Transition(
                            kind="changed",
                            local=local,
                            remote=remote,
                            old=previous,
                            new=state,
                            at=now,
                            in_old=now - entry.since,
                            in_old_lower_bound=entry.since_start,
                            pid=entry.pid,
                            initial=False,
                            record=record,
                        )
                    )
                counts[previous] -= 1
                counts[state] += 1
                entry.previous = previous
                entry.state = state
                entry.since = now
                entry.since_start = False
                entry.changed_at = now
        return kept

    def _drop(self, keys: Iterable[Key], now: float, events: list[Transition]) -> None:
        """Forget the sockets of ``keys`` (tracked ones), with their disappeared events."""
        only = self.filter.state
        sockets = self._sockets
        counts = self._counts
        for key in keys:
            gone = sockets.pop(key)
            counts[gone.state] -= 1
            if only is None or gone.state is only:
                events.append(
                    Transition(
                        kind="disappeared",
                        local=gone.record.local,
                        remote=gone.record.remote,
                        old=gone.state,
                        new=None,
                        at=now,
                        in_old=now - gone.since,
                        in_old_lower_bound=gone.since_start,
                        pid=gone.pid,
                        initial=False,
                        record=gone.record,
                    )
                )

    def sockets(self) -> Iterator[Tracked]:
        """The sockets that pass every filter, in the order they were first seen."""
        only = self.filter.state
        for entry in self._sockets.values():
            if only is None or entry.state is only:
                yield entry

    def __len__(self) -> int:
        """How many sockets pass every filter."""
        only = self.filter.state
        if only is None:
            return len(self._sockets)
        return self._counts[only]

    def counts(self) -> Counter[TcpState]:
        """Sockets per state among those that pass every filter (the latest snapshot)."""
        only = self.filter.state
        counts = +self._counts  # a copy without the states that dropped to zero
        if only is not None:
            return Counter({only: counts[only]}) if counts[only] else Counter()
        return counts

    def tracked_keys(self) -> frozenset[Key]:
        """Every 4-tuple followed, including those a state filter hides."""
        return frozenset(self._sockets)


__all__ = ["Key", "Kind", "Tracked", "Tracker", "Transition", "WatchFilter", "key_of"]
