"""Delta refreshes: compare raw sock_diag dumps, decode only the sockets that changed.

Why: ``watch`` reads the whole table 10 times a second. At 50 000 sockets a refresh cost
~250 ms (2 vCPU VM, Python 3.11): ~27 ms for the kernel to fill the dump, ~190 ms decoding
every ``inet_diag_msg`` into a ``SocketRecord`` and ~34 ms for the tracker's pass over them,
so the whole table refreshed 3.7-3.9 times a second where the target is 10. Yet between two
refreshes almost nothing changes. Here each socket of a dump is only *marked*
(``observe.netlink.MarkDecoder``: one ``struct`` call and one dict entry per socket, ~18 ms
at 50 000), the mark being the bytes that say which socket it is and what ``watch`` reports
about it (family, state, timer kind, retransmits, 4-tuple, owner inode). Dumps are compared
mark to mark with dict lookups done in C, and only the new and vanished marks are decoded
and handed to ``Tracker.update_changed``: ~54 ms a refresh at 50 000 when little changes
(18 a second), against 190-200 ms for the plain path in the same runs, itself faster now
than it was (``bench/watchbench.py`` measures both side by side; ``bench/README.md``).

What must stay exactly as ``Tracker.update`` does it on the whole snapshot (the tests feed
both paths the same hand-built or kernel-recorded replies and compare every transition):

- a socket whose owner is unknown is looked up again at every refresh (``owner``), and a new
  inode (an accepted connection) changes its mark. Sockets whose owner is still unknown and
  that have an inode are decoded and looked up again each refresh, in table order; a socket
  without an inode (TIME_WAIT, request, not yet accepted) has no owner to find;
- a 4-tuple reported by several sockets (SO_REUSEPORT listeners) is one socket whose first
  record in table order wins: every socket of such a 4-tuple is looked at each refresh;
- a socket the kernel reports twice in one dump (the table changed under the dump) is
  looked at twice when it is looked at, as ``update`` sees two records;
- ``disappeared`` events carry the last record seen, and the table shows the latest timer
  and queues: a tracked socket's record is decoded again from the latest dump only when it
  is shown (``sockets``) or gone, so the live view decodes what fits on the screen.

The first refresh, and the first after an error, decode everything and use ``update``.
When everything changes at once (every socket's timer kind flipping) a refresh costs a little
more than the plain path (the mark pass and comparison on top); otherwise it costs those
two and the changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import filterfalse

from handshake_lab.observe.base import SocketRecord
from handshake_lab.observe.netlink_codec import RawDump
from handshake_lab.watch.tracker import Key, Tracked, Tracker, Transition, WatchFilter, key_of

Owner = Callable[[SocketRecord], int | None]


@dataclass(frozen=True, slots=True)
class Delta:
    """What ``DeltaTracker.compare`` found; ``apply`` it to move the tracker on.

    ``full``: no usable previous dump, ``records`` is the whole table. Otherwise ``records``
    are the sockets to look at (new marks, unknown owners, shared 4-tuples) in table order.
    """

    dump: RawDump
    base: RawDump | None
    """The dump this one was compared with (``None``: with nothing)."""
    full: bool
    marks: Sequence[bytes]
    records: Sequence[SocketRecord]
    added: dict[bytes, Key]
    removed: dict[bytes, Key]
    gone: dict[Key, SocketRecord]
    """4-tuples no longer in the table -> the last record seen of one of their sockets."""


class DeltaTracker(Tracker):
    """A ``Tracker`` fed with raw dumps: ``apply(compare(dump), now, owner)`` each refresh.

    Plain ``update`` still works (the ``ss`` fallback uses it): the next dump is then
    compared with nothing and decoded whole.
    """

    def __init__(self, watch_filter: WatchFilter | None = None) -> None:
        super().__init__(watch_filter)
        self._dump: RawDump | None = None
        """The last dump applied whole: the tracked sockets' latest records are decoded from it."""
        self._synced = False
        """The bookkeeping below describes ``_dump`` (else: compare the next dump with nothing)."""
        self._where: dict[Key, bytes] = {}
        """4-tuple -> the mark of its socket in ``_dump``, for 4-tuples with one socket."""
        self._shared: dict[Key, list[bytes]] = {}
        """4-tuple -> the marks of its sockets, for 4-tuples with several (SO_REUSEPORT)."""
        self._unowned: set[bytes] = set()
        """Marks whose owner ``update`` would ask again: unknown, and the socket has an inode."""

    def compare(self, dump: RawDump) -> Delta:
        """What changed since the last dump. Decodes; raises ``ObserverError``; changes nothing."""
        old = self._dump if self._synced else None
        if old is None:
            messages = dump.messages()
            marks = [mark for mark, _ in messages]
            records = [dump.record_at(offset) for _, offset in messages]
            return Delta(dump, None, True, marks, records, {}, {}, {})
        now_marks, old_marks = dump.marks, old.marks
        added_marks = list(filterfalse(old_marks.__contains__, now_marks))  # in table order
        removed: dict[bytes, Key] = {}
        gone_records: dict[bytes, SocketRecord] = {}
        if len(old_marks) - len(now_marks) + len(added_marks):  # some old mark is not here
            for mark in filterfalse(now_marks.__contains__, old_marks):
                gone_records[mark] = record = old.record(mark)
                removed[mark] = key_of(record)
        take: dict[bytes, SocketRecord] = {}
        added: dict[bytes, Key] = {}
        for mark in added_marks:
            take[mark] = record = dump.record(mark)
            added[mark] = key_of(record)
        # A 4-tuple that now has, or had, several sockets: all of them, the first one wins.
        where, shared = self._where, self._shared
        for key in {*added.values(), *shared}:
            others = shared.get(key) or ([where[key]] if key in where else [])
            for mark in others:
                if mark not in take and mark in now_marks:
                    take[mark] = dump.record(mark)
        for mark in self._unowned:
            if mark not in take and mark in now_marks:
                take[mark] = dump.record(mark)
        # In table order, with any second report of a socket that is looked at (``update``
        # would look at it twice: an owner not found the first time is asked again).
        chosen = [(now_marks[mark], mark, record) for mark, record in take.items()]
        chosen += [(at, mark, dump.record_at(at)) for mark, at in dump.repeats if mark in take]
        chosen.sort(key=_first)
        present = set(added.values())
        gone: dict[Key, SocketRecord] = {}
        for mark, key in removed.items():
            if key in present or key in gone:
                continue
            others = shared.get(key) or [where[key]]
            if any(other in now_marks for other in others):
                present.add(key)
                continue
            gone[key] = gone_records[mark]
        marks = [mark for _, mark, _ in chosen]
        looked_at = [record for *_, record in chosen]
        return Delta(dump, old, False, marks, looked_at, added, removed, gone)

    def apply(self, delta: Delta, now: float, owner: Owner | None = None) -> list[Transition]:
        """Take the snapshot ``delta`` describes (as ``update`` does); return its transitions.

        ``ValueError`` if ``delta`` was not compared with the tracker's latest dump.
        """
        if not delta.full and (delta.base is not self._dump or not self._synced):
            raise ValueError("a Delta applies once, to the dump it was compared with")
        try:
            if delta.full:
                self._freshen_all()
                events = super().update(delta.records, now, owner)
                self._rebuild(delta, owner)
            else:
                sockets = self._sockets
                previous = self.refreshes
                for key, record in delta.gone.items():
                    entry = sockets.get(key)
                    if entry is not None and entry.generation != previous:
                        entry.record = record  # the last one seen, for the disappeared event
                events = self.update_changed(delta.records, delta.gone, now, owner)
                self._follow(delta, owner)
        except BaseException:
            self._synced = False  # the bookkeeping may be half done: compare with nothing
            raise
        self._dump = delta.dump
        self._synced = True
        return events

    def update(
        self,
        records: Iterable[SocketRecord],
        now: float,
        owner: Owner | None = None,
    ) -> list[Transition]:
        self._freshen_all()
        self._dump = None
        self._synced = False
        return super().update(records, now, owner)

    def sockets(self) -> Iterator[Tracked]:
        """As ``Tracker.sockets``, each with the record of the latest dump."""
        generation = self.refreshes
        for entry in super().sockets():
            if entry.generation != generation:
                self._freshen(entry, generation)
            yield entry

    def _freshen(self, entry: Tracked, generation: int) -> None:
        dump = self._dump
        if dump is None:
            return
        mark = self._where.get(key_of(entry.record))
        if mark is not None and mark in dump.marks:
            entry.record = dump.record(mark)
            entry.generation = generation

    def _freshen_all(self) -> None:
        """Every record from the latest dump (before ``update`` looks at them all)."""
        if self._dump is not None:
            generation = self.refreshes
            for entry in self._sockets.values():
                if entry.generation != generation:
                    self._freshen(entry, generation)

    def _rebuild(self, delta: Delta, owner: Owner | None) -> None:
        self._where.clear()
        self._shared.clear()
        self._unowned.clear()
        for mark, record in zip(delta.marks, delta.records, strict=True):
            self._link(mark, key_of(record))
            if self._asks_owner(record, owner):
                self._unowned.add(mark)

    def _follow(self, delta: Delta, owner: Owner | None) -> None:
        unowned = self._unowned
        for mark, key in delta.removed.items():
            self._unlink(mark, key)
            unowned.discard(mark)
        for mark, key in delta.added.items():
            self._link(mark, key)
        for mark, record in zip(delta.marks, delta.records, strict=True):
            if self._asks_owner(record, owner):
                unowned.add(mark)
            else:
                unowned.discard(mark)

    def _asks_owner(self, record: SocketRecord, owner: Owner | None) -> bool:
        """Would ``update`` ask ``owner`` about this socket at the next refresh?

        Only with an inode: ``ProcOwners`` (the one owner source used with netlink) finds
        nothing, and does nothing, for a socket without one.
        """
        if owner is None or record.pid is not None or not getattr(record, "inode", None):
            return False
        if not self.filter.port_ok(record):
            return False
        entry = self._sockets.get(key_of(record))
        return entry is None or entry.pid is None

    def _link(self, mark: bytes, key: Key) -> None:
        have = self._where.pop(key, None)
        if have is not None:
            self._shared[key] = [have, mark]
        elif key in self._shared:
            self._shared[key].append(mark)
        else:
            self._where[key] = mark

    def _unlink(self, mark: bytes, key: Key) -> None:
        if self._where.get(key) == mark:
            del self._where[key]
            return
        marks = self._shared[key]
        marks.remove(mark)
        if len(marks) == 1:
            self._where[key] = marks[0]
            del self._shared[key]


def _first(item: tuple[int, bytes, SocketRecord]) -> int:
    return item[0]


__all__ = ["Delta", "DeltaTracker"]
