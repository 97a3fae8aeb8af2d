"""The impure half of ``watch``: read the table (``Watcher.refresh``), attribute owners, track,
and pace the refreshes (``run_watch``). See the package docstring for the design and costs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from handshake_lab.errors import ObserverError
from handshake_lab.observe.base import Observer, SocketRecord
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.watch.delta import Delta, DeltaTracker
from handshake_lab.watch.owners import Owners, ProcOwners, PsutilOwners
from handshake_lab.watch.tracker import Tracked, Tracker, Transition, WatchFilter


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
        owners: Owners | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        delta: bool = True,
    ) -> None:
        self.filter = watch_filter
        self.clock = clock
        self.wall = wall
        self.note: str | None = None
        self._fallback = observer is None
        self._observer: Observer = observer if observer is not None else NetlinkObserver()
        self._owners: Owners = owners if owners is not None else ProcOwners(watch_filter.pid)
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
