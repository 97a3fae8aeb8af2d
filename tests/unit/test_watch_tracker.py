"""The watch tracker: snapshots in, transitions out. Pure: no sockets, no clock."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.observe.base import Address, SocketRecord, Timer
from handshake_lab.tcp.states import TcpState
from handshake_lab.watch.tracker import Key, Tracker, Transition, WatchFilter, key_of

SERVER = Address("127.0.0.1", 8080)
CLIENT = Address("127.0.0.1", 40000)
LISTENER_KEY: Key = ("127.0.0.1", 8080, None, None)


def rec(
    state: TcpState,
    local: Address = SERVER,
    remote: Address | None = CLIENT,
    *,
    pid: int | None = None,
    timer: Timer | None = None,
) -> SocketRecord:
    return SocketRecord(
        source="fake",
        state=state,
        raw_state=state.name,
        local=local,
        remote=remote,
        pid=pid,
        timer=timer,
    )


def kinds(events: list[Transition]) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.old.name if e.old else None, e.new.name if e.new else None) for e in events]


def test_first_snapshot_reports_every_socket_as_initial_appearance() -> None:
    tracker = Tracker()
    events = tracker.update([rec(TcpState.LISTEN, remote=None)], now=10.0)
    assert kinds(events) == [("appeared", None, "LISTEN")]
    assert events[0].initial
    assert events[0].in_old is None


def test_later_appearance_is_not_initial() -> None:
    tracker = Tracker()
    tracker.update([], now=0.0)
    (event,) = tracker.update([rec(TcpState.ESTABLISHED)], now=0.5)
    assert event.kind == "appeared"
    assert not event.initial


def test_state_change_reports_time_in_previous_state() -> None:
    tracker = Tracker()
    tracker.update([], now=0.0)
    tracker.update([rec(TcpState.ESTABLISHED)], now=1.0)
    tracker.update([rec(TcpState.ESTABLISHED)], now=1.5)
    (event,) = tracker.update([rec(TcpState.CLOSE_WAIT)], now=3.25)
    assert kinds([event]) == [("changed", "ESTABLISHED", "CLOSE_WAIT")]
    assert event.in_old == pytest.approx(2.25)
    assert not event.in_old_lower_bound


def test_time_in_a_state_seen_at_start_is_a_lower_bound() -> None:
    tracker = Tracker()
    tracker.update([rec(TcpState.ESTABLISHED)], now=0.0)
    (event,) = tracker.update([rec(TcpState.FIN_WAIT1)], now=2.0)
    assert event.in_old == pytest.approx(2.0)
    assert event.in_old_lower_bound


def test_disappearance_reports_last_state_and_time_in_it() -> None:
    tracker = Tracker()
    tracker.update([], now=0.0)
    tracker.update([rec(TcpState.TIME_WAIT)], now=1.0)
    (event,) = tracker.update([], now=61.0)
    assert kinds([event]) == [("disappeared", "TIME_WAIT", None)]
    assert event.in_old == pytest.approx(60.0)
    assert event.record.state is TcpState.TIME_WAIT


def test_unchanged_snapshot_yields_no_events_and_keeps_latest_timer() -> None:
    tracker = Tracker()
    tracker.update([rec(TcpState.TIME_WAIT, timer=Timer("timewait", 59.0, 0))], now=0.0)
    assert tracker.update([rec(TcpState.TIME_WAIT, timer=Timer("timewait", 58.0, 0))], 1.0) == []
    (entry,) = tracker.sockets()
    assert entry.record.timer == Timer("timewait", 58.0, 0)


def test_listener_and_connection_on_the_same_port_are_different_sockets() -> None:
    tracker = Tracker()
    events = tracker.update(
        [rec(TcpState.LISTEN, remote=None), rec(TcpState.ESTABLISHED)], now=0.0
    )
    assert len(events) == 2
    assert tracker.counts() == Counter({TcpState.LISTEN: 1, TcpState.ESTABLISHED: 1})


def test_repeated_four_tuple_in_one_snapshot_counts_once_first_wins() -> None:
    tracker = Tracker()
    events = tracker.update(
        [rec(TcpState.LISTEN, remote=None, pid=1), rec(TcpState.LISTEN, remote=None, pid=2)],
        now=0.0,
    )
    assert len(events) == 1
    assert events[0].pid == 1
    assert len(tracker) == 1


def test_port_filter_matches_local_or_remote_port() -> None:
    tracker = Tracker(WatchFilter(ports=frozenset({40000})))
    other = rec(TcpState.ESTABLISHED, Address("10.0.0.1", 22), Address("10.0.0.2", 5555))
    events = tracker.update([rec(TcpState.ESTABLISHED), other], now=0.0)
    assert [e.local for e in events] == [SERVER]


def test_pid_filter_follows_a_socket_after_its_owner_lets_go() -> None:
    tracker = Tracker(WatchFilter(pid=42))
    mine = rec(TcpState.ESTABLISHED, pid=42)
    theirs = rec(TcpState.ESTABLISHED, local=Address("127.0.0.1", 9), pid=7)
    assert kinds(tracker.update([mine, theirs], now=0.0)) == [("appeared", None, "ESTABLISHED")]
    # After close() the kernel no longer says who owned it: still followed, still "pid 42".
    (event,) = tracker.update([rec(TcpState.TIME_WAIT), theirs], now=1.0)
    assert kinds([event]) == [("changed", "ESTABLISHED", "TIME_WAIT")]
    assert event.pid == 42


def test_owner_function_is_asked_only_while_owner_is_unknown() -> None:
    asked: list[Key] = []

    def owner(record: SocketRecord) -> int | None:
        asked.append(key_of(record))
        return 5 if len(asked) > 1 else None

    tracker = Tracker()
    tracker.update([rec(TcpState.ESTABLISHED)], now=0.0, owner=owner)
    tracker.update([rec(TcpState.ESTABLISHED)], now=1.0, owner=owner)
    tracker.update([rec(TcpState.ESTABLISHED)], now=2.0, owner=owner)
    assert len(asked) == 2
    (entry,) = tracker.sockets()
    assert entry.pid == 5


def test_state_filter_reports_entering_and_leaving_not_disappearing() -> None:
    tracker = Tracker(WatchFilter(state=TcpState.ESTABLISHED))
    assert tracker.update([rec(TcpState.SYN_SENT)], now=0.0) == []
    assert kinds(tracker.update([rec(TcpState.ESTABLISHED)], now=1.0)) == [
        ("changed", "SYN_SENT", "ESTABLISHED")
    ]
    assert kinds(tracker.update([rec(TcpState.FIN_WAIT1)], now=2.0)) == [
        ("changed", "ESTABLISHED", "FIN_WAIT1")
    ]
    assert tracker.update([rec(TcpState.FIN_WAIT2)], now=3.0) == []
    assert tracker.counts() == Counter()
    assert list(tracker.sockets()) == []


def test_time_going_backwards_is_refused() -> None:
    tracker = Tracker()
    tracker.update([], now=5.0)
    with pytest.raises(ValueError, match="before the previous"):
        tracker.update([], now=4.0)


# --- properties over random snapshot sequences ------------------------------------------

HOSTS = ("127.0.0.1", "::1")
PORTS = (80, 8080, 40000, 40001)
STATES = [s for s in TcpState if s is not TcpState.NEW_SYN_RECV]


@st.composite
def socket_records(draw: st.DrawFn) -> SocketRecord:
    local = Address(draw(st.sampled_from(HOSTS)), draw(st.sampled_from(PORTS)))
    remote = draw(st.none() | st.builds(Address, st.sampled_from(HOSTS), st.sampled_from(PORTS)))
    return rec(
        draw(st.sampled_from(STATES)), local, remote, pid=draw(st.sampled_from([None, 1, 2]))
    )


@dataclass(frozen=True)
class Run:
    snapshots: list[list[SocketRecord]]
    times: list[float]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    snapshots = draw(st.lists(st.lists(socket_records(), max_size=8), min_size=1, max_size=8))
    steps = draw(
        st.lists(
            st.floats(0, 5, allow_nan=False), min_size=len(snapshots), max_size=len(snapshots)
        )
    )
    times: list[float] = []
    now = 100.0
    for step in steps:
        now += step
        times.append(now)
    return Run(snapshots, times)


def first_wins(records: list[SocketRecord]) -> dict[Key, SocketRecord]:
    out: dict[Key, SocketRecord] = {}
    for record in records:
        out.setdefault(key_of(record), record)
    return out


@settings(max_examples=200, deadline=None)
@given(runs())
def test_events_replayed_rebuild_every_snapshot_and_counts_match(run: Run) -> None:
    tracker = Tracker()
    known: dict[Key, TcpState] = {}
    entered: dict[Key, float] = {}
    for index, (records, now) in enumerate(zip(run.snapshots, run.times, strict=True)):
        for event in tracker.update(records, now):
            key: Key = (
                event.local.host,
                event.local.port,
                None if event.remote is None else event.remote.host,
                None if event.remote is None else event.remote.port,
            )
            assert event.at == now
            assert event.initial == (index == 0 and event.kind == "appeared")
            if event.kind == "appeared":
                assert key not in known
                assert event.old is None
                assert event.new is not None
                known[key] = event.new
                entered[key] = now
            elif event.kind == "changed":
                assert known.get(key) == event.old
                assert event.new not in (None, event.old)
                assert event.in_old == pytest.approx(now - entered[key])
                assert event.new is not None
                known[key] = event.new
                entered[key] = now
            else:
                assert known.get(key) == event.old
                assert event.new is None
                assert event.in_old == pytest.approx(now - entered[key])
                del known[key]
        latest = first_wins(records)
        assert known == {key: record.state for key, record in latest.items()}
        assert tracker.counts() == Counter(record.state for record in latest.values())
        assert len(tracker) == len(latest)


@settings(max_examples=100, deadline=None)
@given(runs(), st.sampled_from(STATES), st.sampled_from(PORTS))
def test_filtered_counts_match_filtered_snapshot(run: Run, state: TcpState, port: int) -> None:
    tracker = Tracker(WatchFilter(ports=frozenset({port}), state=state))
    for records, now in zip(run.snapshots, run.times, strict=True):
        for event in tracker.update(records, now):
            assert state in (event.old, event.new)
            assert event.local.port == port or (
                event.remote is not None and event.remote.port == port
            )
        on_port = [
            r
            for r in first_wins(records).values()
            if r.local.port == port or (r.remote is not None and r.remote.port == port)
        ]
        expected = Counter(r.state for r in on_port if r.state is state)
        assert tracker.counts() == expected
        assert all(entry.state is state for entry in tracker.sockets())


@settings(max_examples=200, deadline=None)
@given(runs())
def test_update_changed_given_every_record_and_the_gone_keys_is_update(run: Run) -> None:
    """The caller of ``update_changed`` says what is gone instead of the tracker finding out;
    given every record it must agree with ``update`` on everything."""
    plain, told = Tracker(), Tracker()
    previous: set[Key] = set()
    for records, now in zip(run.snapshots, run.times, strict=True):
        current = set(first_wins(records))
        expected = plain.update(records, now)
        assert told.update_changed(records, previous - current, now) == expected
        assert [(e.record, e.state, e.since, e.pid) for e in told.sockets()] == [
            (e.record, e.state, e.since, e.pid) for e in plain.sockets()
        ]
        assert told.counts() == plain.counts()
        previous = current
