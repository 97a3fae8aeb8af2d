"""``watch``: follow the kernel's TCP states of any program's sockets, refresh after refresh.

Layers: ``tracker`` is pure (snapshots in, transitions out). This module is the impure part:
it reads the socket table (``Watcher.refresh``), finds socket owners (``ProcOwners``) and
paces the refreshes (``run_watch``). Rendering lives in ``handshake_lab.render.watch``.

Cost per refresh, designed for 10 refreshes per second at 50 000 sockets on one core:

- The table is read over netlink sock_diag with the port filter run in the kernel
  (``NetlinkObserver``): no process to spawn, no text to parse, and sockets on other ports
  never reach Python. If netlink is unusable (a sandbox without NETLINK_SOCK_DIAG) the
  watcher falls back to ``ss`` with the same kernel filter, once, and says so (``note``).
  The state filter is NOT pushed to the kernel: a socket that leaves the watched state must
  still be seen, or ``ESTABLISHED -> CLOSE_WAIT`` would look like a disappearance.
- Owners are not in the kernel's table. The owner of a socket is the process holding a file
  descriptor whose link reads ``socket:[INODE]`` (netlink reports the inode), so finding it
  means reading every ``/proc/PID/fd`` link (``ss -p`` does the same). That costs 3-9 us
  per descriptor (measured here: 150 ms for 17 500 descriptors), as much as a whole netlink
  read at 50 000 sockets, so ``ProcOwners`` rescans only when a socket with an unknown
  inode shows up, and never more often than its own cost allows: after a scan that took
  ``c`` seconds the next one waits ``c / budget`` (budget 5 %: a 150 ms scan runs at most
  every 3 s), and an inode no scan could place (another user's process) is retried every
  2 s at most. ``--pid P`` scans only ``/proc/P/fd`` (P itself: not its children).
  TIME_WAIT and request sockets have no owner (inode 0) and cost nothing. With the ``ss``
  fallback (no inodes) owners come from ``psutil.net_connections`` by 4-tuple on the same
  budget (psutil takes ~0.7 s at 50 000).
- The table is not decoded whole at each refresh (``watch.delta``): the dump is read as one
  byte key per socket (state, 4-tuple, inode...), compared with the previous dump in C
  (dict lookups), and only the sockets that appeared, changed or still lack an owner are
  decoded and given to the tracker; the table's rows are decoded when they are shown. At
  50 000 sockets a whole-table refresh went from ~250 ms (every socket decoded, then one
  tracker pass over all of them) to ~55-60 ms, most of it the kernel filling the dump and
  the one pass that keys it (``bench/watchbench.py`` prints both). The ``ss`` fallback and
  observers passed in by tests take the plain path: the tracker's one dict pass over every
  record with plain-tuple keys.

An owner found late (a socket newer than the last scan) shows in the table at the next scan;
its ``appeared`` event, already emitted, says ``pid: null``. A socket whose owner closes it
before any scan saw it (a connection shorter than a refresh) is never attributed: after
``close()`` its inode is 0. ``--pid`` therefore misses such connections entirely.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from handshake_lab.errors import ObserverError
from handshake_lab.observe.base import Observer, SocketRecord
from handshake_lab.tcp.states import TcpState
from handshake_lab.watch.tracker import Tracked, Tracker, Transition, WatchFilter, key_of

if TYPE_CHECKING:
    from handshake_lab.observe.netlink import NetlinkObserver
    from handshake_lab.watch.delta import Delta, DeltaTracker

OWNER_BUDGET = 0.05
"""Share of wall time the owner scans may take (see the module docstring)."""
OWNER_RETRY = 2.0
"""Seconds between scans for inodes an earlier scan could not place."""
_NO_OWNER_STATES = frozenset({TcpState.TIME_WAIT, TcpState.NEW_SYN_RECV})


def process_exists(pid: int, proc: str = "/proc") -> bool:
    """True if ``pid`` is a running process (zombies included) in our pid namespace."""
    return pid > 0 and os.path.isdir(os.path.join(proc, str(pid)))


class _Owners:
    """Owner lookup with scans on demand, paced by their own cost (module docstring).

    A lookup that misses triggers a rescan when the pacing allows; an identity that a scan
    could not place is retried every ``retry`` seconds at most. Subclasses say what
    identifies a socket (``_ident``) and how to scan (``_scan``).
    """

    def __init__(
        self,
        pid: int | None,
        *,
        budget: float,
        retry: float,
        clock: Callable[[], float],
    ) -> None:
        self.pid = pid
        self.budget = budget
        self.retry = retry
        self.clock = clock
        self.scans = 0
        self.last_cost = 0.0
        self.spent = 0.0
        """Seconds spent in scans so far."""
        self._map: dict[Hashable, int] = {}
        self._missed: set[Hashable] = set()
        self._scanned = False
        self._not_before = 0.0
        self._retry_at = 0.0
        self._names: dict[int, str | None] = {}

    def owner(self, record: SocketRecord) -> int | None:
        """The pid holding ``record``'s socket, scanning first if that is due."""
        ident = self._ident(record)
        if ident is None:
            return None
        pid = self._map.get(ident)
        if pid is not None or not self._due(ident):
            return pid
        start = self.clock()
        self._map = self._scan()
        self._missed.clear()
        self._names.clear()  # pids may have been reused since the names were read
        end = self.clock()
        self.scans += 1
        self.last_cost = end - start
        self.spent += self.last_cost
        self._scanned = True
        self._not_before = end + self.last_cost / self.budget
        self._retry_at = end + max(self.retry, self.last_cost / self.budget)
        pid = self._map.get(ident)
        if pid is None:
            self._missed.add(ident)
        return pid

    def name(self, pid: int) -> str | None:
        """The process's ``comm`` (up to 15 characters), or ``None`` if it is gone."""
        if pid not in self._names:
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                    self._names[pid] = f.read().strip() or None
            except OSError:
                self._names[pid] = None
        return self._names[pid]

    def _due(self, ident: Hashable) -> bool:
        if not self._scanned:
            return True
        now = self.clock()
        if now < self._not_before:
            return False
        return ident not in self._missed or now >= self._retry_at

    def _ident(self, record: SocketRecord) -> Hashable | None:
        raise NotImplementedError

    def _scan(self) -> dict[Hashable, int]:
        raise NotImplementedError


class ProcOwners(_Owners):
    """Socket inode -> pid from the ``/proc/PID/fd`` links (records need an ``inode``).

    ``pid`` limits every scan to that process. ``proc`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        proc: str = "/proc",
        budget: float = OWNER_BUDGET,
        retry: float = OWNER_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(pid, budget=budget, retry=retry, clock=clock)
        self.proc = proc

    def _ident(self, record: SocketRecord) -> Hashable | None:
        # 0 for TIME_WAIT and request sockets: nothing owns them, nothing to look up.
        inode: int | None = getattr(record, "inode", None)
        return inode or None

    def _scan(self) -> dict[Hashable, int]:
        found: dict[Hashable, int] = {}
        pids = [self.pid] if self.pid is not None else _numeric(self.proc)
        for pid in pids:
            try:
                entries = os.scandir(os.path.join(self.proc, str(pid), "fd"))
            except OSError:  # gone, or another user's process
                continue
            with entries:
                for entry in entries:
                    try:
                        target = os.readlink(entry.path)
                    except OSError:  # closed meanwhile
                        continue
                    if target.startswith("socket:["):
                        found.setdefault(int(target[8:-1]), pid)
        return found


def _numeric(proc: str) -> list[int]:
    try:
        names = os.listdir(proc)
    except OSError as error:
        raise ObserverError(f"cannot list {proc}: {error.strerror or error}") from error
    return [int(name) for name in names if name.isdigit()]


class PsutilOwners(_Owners):
    """4-tuple -> pid from ``psutil.net_connections`` (records without an inode: ``ss``)."""

    def __init__(
        self,
        pid: int | None = None,
        *,
        budget: float = OWNER_BUDGET,
        retry: float = OWNER_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(pid, budget=budget, retry=retry, clock=clock)

    def _ident(self, record: SocketRecord) -> Hashable | None:
        if record.state in _NO_OWNER_STATES:
            return None
        return key_of(record)

    def _scan(self) -> dict[Hashable, int]:
        import psutil  # noqa: PLC0415  (~20 ms to import; only the ss fallback needs it)

        from handshake_lab.observe.psutil_observer import (  # noqa: PLC0415
            record_from_connection,
        )

        try:
            connections = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return {}  # owners stay unknown; the states are what matters
        found: dict[Hashable, int] = {}
        for conn in connections:
            if conn.pid is None or (self.pid is not None and conn.pid != self.pid):
                continue
            try:
                record = record_from_connection(conn)
            except ObserverError:
                continue
            if record is not None:
                found.setdefault(key_of(record), conn.pid)
        return found


@dataclass(frozen=True)
class Refresh:
    """One refresh: the transitions it found and what it cost."""

    index: int
    """1 for the first refresh (whose ``appeared`` events are ``initial``)."""
    at: float
    """Monotonic time of the read."""
    wall: float
    """``time.time()`` of the read, for printing."""
    transitions: list[Transition]
    tracker: Tracker
    observer: str
    read_s: float
    owner_s: float
    track_s: float
    process_name: Callable[[int], str | None] = field(repr=False)

    @property
    def cost_s(self) -> float:
        return self.read_s + self.owner_s + self.track_s

    def sockets(self) -> list[Tracked]:
        return list(self.tracker.sockets())


class Watcher:
    """Read, attribute owners, track: ``refresh()`` once per interval.

    ``observer`` defaults to netlink with a fallback to ``ss`` (see the module docstring);
    pass one (a ``FakeObserver``) to test. ``note`` says which fallback was taken, if any.
    With a ``NetlinkObserver`` and ``ProcOwners`` (the defaults) refreshes go through
    ``watch.delta`` (only changed sockets are decoded) unless ``delta`` is False; the
    transitions are the same either way.
    """

    def __init__(
        self,
        watch_filter: WatchFilter,
        observer: Observer | None = None,
        *,
        owners: _Owners | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        delta: bool = True,
    ) -> None:
        from handshake_lab.observe.netlink import NetlinkObserver  # noqa: PLC0415
        from handshake_lab.watch.delta import DeltaTracker  # noqa: PLC0415

        self.filter = watch_filter
        self.clock = clock
        self.wall = wall
        self.note: str | None = None
        self._fallback = observer is None
        self._observer: Observer = observer if observer is not None else NetlinkObserver()
        self._owners: _Owners = owners if owners is not None else ProcOwners(watch_filter.pid)
        self._ports = sorted(watch_filter.ports) if watch_filter.ports is not None else None
        self._netlink: NetlinkObserver | None = None
        self._delta: DeltaTracker | None = None
        if (
            delta
            and isinstance(self._observer, NetlinkObserver)
            and isinstance(self._owners, ProcOwners)
        ):
            self._netlink = self._observer
            self._delta = DeltaTracker(watch_filter)
        # Not ``self._delta or ...``: a tracker with no sockets is falsy (``__len__``).
        self.tracker: Tracker = self._delta if self._delta is not None else Tracker(watch_filter)

    @property
    def observer_name(self) -> str:
        return self._observer.name

    def refresh(self) -> Refresh:
        """Read the table once and return what changed. Raises ``ObserverError``."""
        start = self.clock()
        read = self._read()
        at = self.clock()
        wall = self.wall()
        owners = self._owners
        if isinstance(read, list):
            no_inodes = read and not hasattr(read[0], "inode")
            if no_inodes and isinstance(owners, ProcOwners):  # ss or a fake: no inodes
                owners = self._owners = PsutilOwners(self.filter.pid)
        spent = owners.spent
        if isinstance(read, list):
            transitions = self.tracker.update(read, at, owners.owner)
        else:
            assert self._delta is not None  # a Delta comes from it
            transitions = self._delta.apply(read, at, owners.owner)
        done = self.clock()
        owner_s = owners.spent - spent
        return Refresh(
            index=self.tracker.refreshes,
            at=at,
            wall=wall,
            transitions=transitions,
            tracker=self.tracker,
            observer=self._observer.name,
            read_s=at - start,
            owner_s=owner_s,
            track_s=done - at - owner_s,
            process_name=owners.name,
        )

    def close(self) -> None:
        close = getattr(self._observer, "close", None)
        if callable(close):
            close()

    def _read(self) -> list[SocketRecord] | Delta:
        """The table: whole, or (``watch.delta``) what changed since the last read."""
        try:
            if self._netlink is not None and self._delta is not None:
                return self._delta.compare(self._netlink.dump(self._ports))
            return self._observer.snapshot(self._ports)
        except ObserverError as error:
            if not self._fallback:
                raise
            self._fallback = False
            from handshake_lab.observe.ss import SsObserver  # noqa: PLC0415

            self.close()
            self._observer = SsObserver()
            self._netlink = None  # the tracker goes on with plain updates
            self.note = f"netlink unusable ({error}); reading the table with ss instead"
            return self._observer.snapshot(self._ports)


Sink = Callable[[Refresh], None]


def run_watch(
    watcher: Watcher,
    sink: Sink,
    *,
    interval: float,
    count: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Refresh every ``interval`` seconds, hand each ``Refresh`` to ``sink``; return how many.

    Ends after ``count`` refreshes (never if None) or when ``stop`` is set. Deadlines are kept
    on a fixed grid, so a slow refresh shortens the next wait instead of drifting; a refresh
    slower than the interval is followed by the next one at once. ``KeyboardInterrupt``
    propagates (the caller ends the display cleanly).
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    if count is not None and count < 1:
        raise ValueError("count must be at least 1")
    waiter = stop if stop is not None else threading.Event()
    done = 0
    deadline = watcher.clock()
    while not waiter.is_set():
        sink(watcher.refresh())
        done += 1
        if count is not None and done >= count:
            break
        deadline += interval
        now = watcher.clock()
        deadline = max(deadline, now)  # late: do not try to catch up with a burst
        waiter.wait(deadline - now)
    return done


__all__ = [
    "OWNER_BUDGET",
    "ProcOwners",
    "PsutilOwners",
    "Refresh",
    "Sink",
    "Tracked",
    "Tracker",
    "Transition",
    "WatchFilter",
    "Watcher",
    "process_exists",
    "run_watch",
]
