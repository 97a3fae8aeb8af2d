"""``watch.delta`` against the plain tracker: the same reply bytes must give the same watch.

Every test feeds one sequence of sock_diag replies (packed by ``tests.netlink_replies``) to
both paths: ``Tracker.update(parse_messages(reply))``, which decodes every socket, and
``DeltaTracker.apply(compare(parse_marks(reply)))``, which decodes what changed. Both get
their own ``ProcOwners`` whose scans are scripted (inode -> pid) and a clock that moves only
between refreshes, so owner look-ups and scan pacing must match too.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.errors import ObserverError
from handshake_lab.observe.base import Address, SocketRecord
from handshake_lab.observe.netlink import NetlinkObserver, parse_marks, parse_messages
from handshake_lab.tcp.states import TcpState
from handshake_lab.watch import ProcOwners, Watcher
from handshake_lab.watch.delta import DeltaTracker
from handshake_lab.watch.tracker import Tracker, Transition, WatchFilter
from tests.netlink_replies import ReplaySocket, diag_msg, dump_reply, error, v4, v6

INET, INET6 = socket.AF_INET, socket.AF_INET6


@dataclass(frozen=True)
class End:
    """A 4-tuple as the kernel reports it: family, ports, raw addresses."""

    family: int
    sport: int
    dport: int
    src: bytes
    dst: bytes


ENDS = (
    End(INET, 8080, 40000, v4("127.0.0.1"), v4("127.0.0.1")),
    End(INET6, 8080, 40000, v6("::ffff:127.0.0.1"), v6("::ffff:127.0.0.1")),  # same 4-tuple
    End(INET, 40000, 8080, v4("127.0.0.1"), v4("127.0.0.1")),
    End(INET6, 8080, 40001, v6("::1"), v6("::1")),
    End(INET, 8080, 0, bytes(16), bytes(16)),  # listener 0.0.0.0:8080
    End(INET6, 8080, 0, bytes(16), bytes(16)),  # listener [::]:8080: the same 36 bytes
    End(INET, 22, 5555, v4("10.0.0.1"), v4("10.0.0.2")),
)
STATES = [state.value for state in TcpState]
INODES = (0, 0, 101, 102, 103)


def message(
    end: End,
    state: int,
    *,
    inode: int = 0,
    timer: int = 0,
    retrans: int = 0,
    expires: int = 0,
    queue: int = 0,
) -> bytes:
    return diag_msg(
        family=end.family,
        state=state,
        timer=timer,
        retrans=retrans,
        sport=end.sport,
        dport=end.dport,
        src=end.src,
        dst=end.dst,
        expires=expires,
        rqueue=queue,
        uid=0,
        inode=inode,
    )


class ScriptedOwners(ProcOwners):
    """``ProcOwners`` (pacing, retries) whose scans see ``owners[inode]`` from refresh
    ``visible[inode]`` on, instead of reading /proc."""

    def __init__(
        self, owners: dict[int, int], visible: dict[int, int], clock: list[float]
    ) -> None:
        super().__init__(clock=lambda: clock[0])
        self.owners = owners
        self.visible = visible
        self.refresh = 0

    def _scan(self) -> dict[Hashable, int]:
        return {
            inode: pid
            for inode, pid in self.owners.items()
            if self.visible.get(inode, 0) <= self.refresh
        }


@dataclass(frozen=True)
class Run:
    replies: list[bytes]
    times: list[float]
    owners: dict[int, int]
    visible: dict[int, int]
    watch_filter: WatchFilter


def view(tracker: Tracker) -> list[tuple[Any, ...]]:
    """What the renderers read of every shown socket (all but the tracker's bookkeeping)."""
    return [
        (e.record, e.state, e.since, e.since_start, e.pid, e.changed_at, e.previous)
        for e in tracker.sockets()
    ]


class Both:
    """The plain and the delta tracker side by side, each with its own owners and clock."""

    def __init__(self, run: Run) -> None:
        self.clock = [0.0]
        self.slow = Tracker(run.watch_filter)
        self.fast = DeltaTracker(run.watch_filter)
        self.slow_owners = ScriptedOwners(run.owners, run.visible, self.clock)
        self.fast_owners = ScriptedOwners(run.owners, run.visible, self.clock)
        self.count = 0

    def refresh(self, reply: bytes, now: float) -> list[Transition]:
        """One refresh of both; their transitions (and anything else) must agree."""
        self.clock[0] = now
        self.slow_owners.refresh = self.fast_owners.refresh = self.count
        self.count += 1
        slow_error = fast_error = None
        slow: list[Transition] = []
        fast: list[Transition] = []
        try:
            slow = self.slow.update(parse_messages(reply), now, self.slow_owners.owner)
        except ObserverError as caught:
            slow_error = type(caught)
        try:
            fast = self.fast.apply(
                self.fast.compare(parse_marks(reply)), now, self.fast_owners.owner
            )
        except ObserverError as caught:
            fast_error = type(caught)
        assert fast_error == slow_error
        assert fast == slow
        assert view(self.fast) == view(self.slow)
        assert self.fast.counts() == self.slow.counts()
        assert len(self.fast) == len(self.slow)
        assert self.fast.refreshes == self.slow.refreshes
        assert self.fast_owners.scans == self.slow_owners.scans
        return slow


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    return message(
        draw(st.sampled_from(ENDS)),
        draw(st.sampled_from(STATES)),
        inode=draw(st.sampled_from(INODES)),
        timer=draw(st.sampled_from((0, 0, 1, 3))),
        retrans=draw(st.sampled_from((0, 0, 1))),
        expires=draw(st.integers(0, 60_000)),
        queue=draw(st.integers(0, 3)),
    )


@st.composite
def runs(draw: st.DrawFn, bad: bool = False) -> Run:
    tables = st.lists(messages(), max_size=9)
    snapshots = draw(st.lists(tables, min_size=1, max_size=9))
    if bad:  # now and then a reply with an unknown state number in it
        snapshots = [
            [*table, message(ENDS[0], 99)] if draw(st.booleans()) else table for table in snapshots
        ]
    times: list[float] = []
    now = 100.0
    for _ in snapshots:
        now += draw(st.sampled_from((0.0, 0.1, 0.5, 3.0)))
        times.append(now)
    owners = draw(st.dictionaries(st.sampled_from(INODES[2:]), st.sampled_from((7, 8))))
    visible = {inode: draw(st.integers(0, len(snapshots))) for inode in owners}
    watch_filter = WatchFilter(
        ports=draw(st.sampled_from((None, frozenset({8080}), frozenset({40001, 5555})))),
        pid=draw(st.sampled_from((None, None, 7))),
        state=draw(st.sampled_from((None, None, TcpState.ESTABLISHED, TcpState.LISTEN))),
    )
    return Run([dump_reply(table) for table in snapshots], times, owners, visible, watch_filter)


@settings(max_examples=400, deadline=None)
@given(runs())
def test_delta_refreshes_give_the_transitions_of_whole_snapshots(run: Run) -> None:
    both = Both(run)
    for reply, now in zip(run.replies, run.times, strict=True):
        both.refresh(reply, now)


@settings(max_examples=150, deadline=None)
@given(runs(bad=True))
def test_a_bad_reply_fails_both_paths_alike_and_the_next_one_goes_on(run: Run) -> None:
    both = Both(run)
    for reply, now in zip(run.replies, run.times, strict=True):
        both.refresh(reply, now)


def inode_owner_failing(record: SocketRecord) -> int | None:
    """An owner source that fails (``/proc`` unreadable) when it has a socket to look up."""
    if getattr(record, "inode", 0):
        raise ObserverError("cannot list /proc")
    return None


def outline(events: list[Transition]) -> list[tuple[Any, ...]]:
    """Transitions without their records (timer and queue values)."""
    return [
        (e.kind, e.local, e.remote, e.old, e.new, e.at, e.in_old, e.pid, e.initial) for e in events
    ]


@settings(max_examples=150, deadline=None)
@given(runs(), st.data())
def test_after_a_refresh_that_failed_midway_the_delta_tracker_resynchronises(
    run: Run, data: st.DataObject
) -> None:
    """An owner look-up that raises in the middle of a refresh leaves both trackers half
    updated, at the same socket (both ask owners about the same sockets in the same order).
    ``watch`` stops there; if a caller goes on, the delta tracker decodes the next table whole
    and agrees again with the plain one on every event and state, but for the timer and queue
    values of records the failed refresh had read."""
    both = Both(run)
    failing = data.draw(st.integers(0, len(run.replies) - 1), label="failing refresh")
    for index, (reply, now) in enumerate(zip(run.replies, run.times, strict=True)):
        if index < failing:
            both.refresh(reply, now)
            continue
        both.clock[0] = now
        owner = inode_owner_failing if index == failing else None
        outcomes: list[object] = []
        for tracker in (both.slow, both.fast):
            try:
                if isinstance(tracker, DeltaTracker):
                    events = tracker.apply(tracker.compare(parse_marks(reply)), now, owner)
                else:
                    events = tracker.update(parse_messages(reply), now, owner)
                outcomes.append(outline(events))
            except ObserverError as caught:
                outcomes.append([type(caught)])
        assert outcomes[0] == outcomes[1]
        assert [row[1:] for row in view(both.fast)] == [row[1:] for row in view(both.slow)]
        assert both.fast.counts() == both.slow.counts()


# --- the cases the delta path handles on purpose, one by one ------------------------------

LISTENER = ENDS[4]
CONN = ENDS[0]
EST, LISTEN, TIME_WAIT, CLOSE_WAIT = (
    TcpState.ESTABLISHED.value,
    TcpState.LISTEN.value,
    TcpState.TIME_WAIT.value,
    TcpState.CLOSE_WAIT.value,
)


def play(tables: Sequence[Sequence[bytes]], **kwargs: Any) -> tuple[Both, list[list[Transition]]]:
    run = Run(
        [dump_reply(table) for table in tables],
        [100.0 + index for index in range(len(tables))],
        kwargs.pop("owners", {}),
        kwargs.pop("visible", {}),
        WatchFilter(**kwargs),
    )
    both = Both(run)
    events = [both.refresh(reply, now) for reply, now in zip(run.replies, run.times, strict=True)]
    return both, events


def test_an_accepted_connection_gets_its_owner_although_its_state_stays() -> None:
    queued = message(CONN, EST, inode=0)  # in the accept queue: no inode yet
    accepted = message(CONN, EST, inode=101)
    both, _ = play([[queued], [queued], [accepted]], owners={101: 7})
    [entry] = both.fast.sockets()
    assert entry.pid == 7


def test_a_socket_whose_owner_shows_up_later_is_looked_up_again() -> None:
    held = message(CONN, EST, inode=101)
    both, events = play([[held]] * 4, owners={101: 7}, visible={101: 2})
    assert events[0][0].pid is None
    assert [entry.pid for entry in both.fast.sockets()] == [7]
    assert both.fast_owners.scans == both.slow_owners.scans >= 2


def test_pid_filter_picks_a_socket_up_once_its_owner_is_known() -> None:
    held = message(CONN, EST, inode=101)
    _, events = play([[held]] * 3, owners={101: 7}, visible={101: 1}, pid=7)
    assert [[(e.kind, e.pid) for e in refresh] for refresh in events] == [
        [],
        [],  # the miss at the first scan is retried OWNER_RETRY (2 s) later
        [("appeared", 7)],
    ]


def test_reuseport_listeners_first_in_table_order_wins_even_when_the_order_changes() -> None:
    first = message(LISTENER, LISTEN, inode=101, queue=1)
    second = message(LISTENER, LISTEN, inode=102, queue=2)
    both, _ = play([[first, second], [second, first], [second], [first, second]])
    [entry] = both.fast.sockets()
    assert entry.record.recv_q == 1


def test_one_of_two_sockets_of_a_4_tuple_changing_state() -> None:
    listening = message(LISTENER, LISTEN, inode=101)
    closed = message(LISTENER, TcpState.CLOSE.value, inode=102)
    play([[closed, listening], [listening], [listening, closed], [closed]])


def test_the_same_socket_reported_twice_in_one_dump_counts_once() -> None:
    once = message(CONN, EST, inode=101, expires=5)
    twice = message(CONN, EST, inode=101, expires=9)  # the same mark, another timer
    both, _ = play([[once], [once, twice], [twice, once]])
    assert len(both.fast) == 1


def test_v4_and_v4_mapped_v6_of_one_4_tuple_are_one_socket() -> None:
    v4_end, mapped = message(ENDS[0], EST), message(ENDS[1], TIME_WAIT)
    play([[v4_end], [mapped], [mapped, v4_end], [v4_end]])


def test_v4_and_v6_wildcard_listeners_are_two_sockets() -> None:
    v4_any, v6_any = message(ENDS[4], LISTEN), message(ENDS[5], LISTEN)
    both, _ = play([[v4_any, v6_any], [v6_any], [v4_any, v6_any]])
    assert len(both.fast) == 2


def test_unchanged_sockets_show_their_latest_timer_and_leave_with_their_last_record() -> None:
    tables = [[message(CONN, TIME_WAIT, timer=3, expires=60_000 - 1000 * n)] for n in range(4)]
    _, events = play([*tables, []])
    (gone,) = events[-1]
    assert gone.kind == "disappeared"
    assert gone.record.timer is not None
    assert gone.record.timer.remaining == pytest.approx(57.0)


def test_the_view_decodes_only_the_rows_it_shows() -> None:
    """A tracked socket that did not change keeps its old record until it is shown."""
    ends = [End(INET, 8080, 40000 + n, v4("127.0.0.1"), v4("127.0.0.1")) for n in range(5)]
    before = [message(end, EST, queue=0) for end in ends]
    after = [message(end, EST, queue=1) for end in ends]
    tracker = DeltaTracker()
    tracker.apply(tracker.compare(parse_marks(dump_reply(before))), 1.0)
    tracker.apply(tracker.compare(parse_marks(dump_reply(after))), 2.0)
    shown = []
    for entry in tracker.sockets():
        shown.append(entry.record.recv_q)
        if len(shown) == 2:
            break
    entries = list(tracker._sockets.values())
    assert [entry.record.recv_q for entry in entries] == [1, 1, 0, 0, 0]
    assert [entry.record.recv_q for entry in tracker.sockets()] == [1] * 5


def test_counts_follow_state_changes_without_walking_the_table() -> None:
    both, _ = play([[message(CONN, EST), message(LISTENER, LISTEN)], [message(CONN, CLOSE_WAIT)]])
    assert both.fast.counts() == Counter({TcpState.CLOSE_WAIT: 1})
    assert TcpState.LISTEN not in both.fast.counts()


def test_plain_updates_after_delta_ones_carry_on_from_the_same_sockets() -> None:
    tracker = DeltaTracker()
    table = [message(CONN, EST, timer=3, expires=9000), message(LISTENER, LISTEN)]
    tracker.apply(tracker.compare(parse_marks(dump_reply(table))), 1.0)
    table[0] = message(CONN, EST, timer=3, expires=8000)
    tracker.apply(tracker.compare(parse_marks(dump_reply(table))), 2.0)
    # The ss fallback: plain records from now on; the listener went away meanwhile.
    records = [r for r in parse_messages(dump_reply(table[:1])) if r.remote is not None]
    (gone,) = tracker.update([r for r in records if r.state is TcpState.ESTABLISHED], 3.0)
    assert (gone.kind, gone.old) == ("disappeared", TcpState.LISTEN)
    # And the next dump is compared with nothing: decoded whole, no events.
    assert tracker.apply(tracker.compare(parse_marks(dump_reply(table[:1]))), 4.0) == []


# --- the watcher: both paths on the same replayed kernel replies --------------------------


def watcher(replies: list[bytes], clock: list[float], *, delta: bool) -> Watcher:
    replay = ReplaySocket(replies, chunk=256)  # several datagrams per reply
    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, replay))
    owners = ScriptedOwners({101: 7}, {}, clock)
    return Watcher(
        WatchFilter(),
        observer,
        owners=owners,
        clock=lambda: clock[0],
        wall=lambda: 1_700_000_000.0 + clock[0],
        delta=delta,
    )


def test_watcher_refreshes_alike_with_and_without_delta() -> None:
    tables = [
        [message(LISTENER, LISTEN, inode=101)],
        [message(LISTENER, LISTEN, inode=101), message(CONN, EST, inode=0)],
        [message(LISTENER, LISTEN, inode=101), message(CONN, EST, inode=101)],
        [message(CONN, CLOSE_WAIT, inode=101)],
        [],
    ]
    replies = [dump_reply(table) for table in tables]
    clock = [0.0]
    fast, slow = watcher(replies, clock, delta=True), watcher(replies, clock, delta=False)
    assert isinstance(fast.tracker, DeltaTracker)
    assert not isinstance(slow.tracker, DeltaTracker)
    for _ in tables:
        clock[0] += 0.5
        a, b = fast.refresh(), slow.refresh()
        assert a.transitions == b.transitions
        assert view(a.tracker) == view(b.tracker)
        assert (a.index, a.at, a.wall) == (b.index, b.at, b.wall)


def test_watcher_uses_delta_only_with_netlink_and_proc_owners() -> None:
    from handshake_lab.observe.fake import FakeObserver  # noqa: PLC0415

    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, ReplaySocket([])))
    assert isinstance(Watcher(WatchFilter(), observer).tracker, DeltaTracker)
    assert not isinstance(Watcher(WatchFilter(), FakeObserver()).tracker, DeltaTracker)


def test_watcher_falls_back_to_ss_after_delta_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    from handshake_lab.observe.ss import SsObserver  # noqa: PLC0415

    replies = [dump_reply([message(CONN, EST, inode=0), message(LISTENER, LISTEN)])] * 2
    replies.append(error(errno.EPERM))
    replay = ReplaySocket(replies)
    monkeypatch.setattr(
        "handshake_lab.observe.netlink.diag_socket", lambda: cast(socket.socket, replay)
    )
    local, remote = parse_messages(replies[0])[0].key
    ss_record = SocketRecord("ss", TcpState.ESTABLISHED, "ESTAB", local, remote, pid=4242)
    monkeypatch.setattr(SsObserver, "snapshot", lambda self, ports=None: [ss_record])
    watch = Watcher(WatchFilter())
    assert isinstance(watch.tracker, DeltaTracker)
    watch.refresh()
    assert watch.refresh().transitions == []
    third = watch.refresh()
    assert watch.note is not None
    assert "ss instead" in watch.note
    assert [(t.kind, t.old) for t in third.transitions] == [("disappeared", TcpState.LISTEN)]
    assert [(e.state, e.record.source) for e in third.sockets()] == [(TcpState.ESTABLISHED, "ss")]
    assert Address("127.0.0.1", 8080) == third.sockets()[0].record.local


def test_a_delta_applies_once_to_the_dump_it_was_compared_with() -> None:
    tracker = DeltaTracker()
    first = dump_reply([message(CONN, EST)])
    tracker.apply(tracker.compare(parse_marks(first)), 1.0)
    delta = tracker.compare(parse_marks(dump_reply([message(CONN, CLOSE_WAIT)])))
    tracker.apply(delta, 2.0)
    with pytest.raises(ValueError, match="applies once"):
        tracker.apply(delta, 3.0)
