"""Who owns a socket: the process holding a file descriptor on its inode (``ProcOwners``), or,
for records without an inode (the ``ss`` fallback), psutil's 4-tuple -> pid (``PsutilOwners``).
Both rescan on a time budget; see the package docstring for the costs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable

import psutil

from handshake_lab.errors import ObserverError
from handshake_lab.observe.base import SocketRecord
from handshake_lab.observe.psutil_observer import record_from_connection
from handshake_lab.tcp.states import TcpState
from handshake_lab.watch.tracker import key_of

OWNER_BUDGET = 0.05
"""Share of wall time the owner scans may take (see the module docstring)."""
OWNER_RETRY = 2.0
"""Seconds between scans for inodes an earlier scan could not place."""
_NO_OWNER_STATES = frozenset({TcpState.TIME_WAIT, TcpState.NEW_SYN_RECV})


def process_exists(pid: int, proc: str = "/proc") -> bool:
    """True if ``pid`` is a running process (zombies included) in our pid namespace."""
    return pid > 0 and os.path.isdir(os.path.join(proc, str(pid)))


class Owners:
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


class ProcOwners(Owners):
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


class PsutilOwners(Owners):
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
