"""The transition-stream parser and ``durations``, on lines captured from Linux 6.18.

Data (``tests/unit/data/trace/``) was captured from a private trace instance with
``trace_clock=mono`` while real loopback sockets went through each scenario the file is named
after. No test here opens a socket or touches tracefs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_lab.errors import MissingDependencyError, ObserverError
from handshake_lab.observe.aliases import UnknownStateError
from handshake_lab.observe.base import Address
from handshake_lab.observe.trace import (
    TraceFollower,
    ensure_tracefs,
    port_filter,
    trace_capability,
)
from handshake_lab.observe.trace_parse import (
    TRACE,
    StateSpan,
    TraceEvent,
    TraceParseError,
    durations,
    from_trace,
    parse_lost_line,
    parse_trace,
    parse_trace_line,
)
from handshake_lab.tcp.states import TcpState as S

DATA = Path(__file__).parent / "data" / "trace"
LO = "127.0.0.1"


def load(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def lines(name: str) -> list[str]:
    return load(name).splitlines()


def transitions(events: list[TraceEvent]) -> list[tuple[int, int, S | None, S | None]]:
    return [(e.local.port, e.ports[1], e.old, e.new) for e in events if e.kind == "state"]


ALL_LINES = [line for path in sorted(DATA.glob("*.txt")) for line in lines(path.name)]
EVENT_LINES = [line for line in ALL_LINES if ": inet_sock_set_state: " in line or ": tcp_" in line]


# -- parser on captured lines ----------------------------------------------------------------


def test_loopback_v4_client_closes_first_shows_both_sides_in_order() -> None:
    events = parse_trace(load("loopback_v4_client_closes.txt"))
    client, server = 35794, 34259
    assert transitions(events) == [
        (0, server, S.CLOSE, S.SYN_SENT),  # port not chosen yet
        (client, server, S.SYN_SENT, S.ESTABLISHED),
        (server, client, S.LISTEN, S.SYN_RECV),  # the child, created on the final ACK
        (server, client, S.SYN_RECV, S.ESTABLISHED),
        (client, server, S.ESTABLISHED, S.FIN_WAIT1),
        (server, client, S.ESTABLISHED, S.CLOSE_WAIT),
        (client, server, S.FIN_WAIT1, S.FIN_WAIT2),
        (client, server, S.FIN_WAIT2, S.CLOSE),  # TIME_WAIT is never reported
        (server, client, S.CLOSE_WAIT, S.LAST_ACK),
        (server, client, S.LAST_ACK, S.CLOSE),
    ]
    assert all(e.local.host == LO and e.remote == Address(LO, e.ports[1]) for e in events)


def test_event_time_is_the_monotonic_timestamp_of_the_line() -> None:
    first = parse_trace_line(lines("loopback_v4_client_closes.txt")[0])
    assert first is not None
    assert first.time == pytest.approx(846.361229, abs=1e-9)
    times = [e.time for e in parse_trace(load("loopback_v4_client_closes.txt"))]
    assert times == sorted(times)


def test_ipv6_events_use_the_v6_fields_and_ignore_the_garbage_v4_ones() -> None:
    events = parse_trace(load("loopback_v6_server_closes.txt"))
    # The v4 fields of these lines say 127.0.0.6 / 0.0.0.0: never reported.
    assert {e.local.host for e in events} == {"::1"}
    assert {e.remote.host for e in events if e.remote is not None} == {"::1"}
    server, client = 38187, 43782
    assert (server, client, S.ESTABLISHED, S.FIN_WAIT1) in transitions(events)
    assert (client, server, S.CLOSE_WAIT, S.LAST_ACK) in transitions(events)


def test_ipv4_mapped_addresses_of_a_dual_stack_socket_become_ipv4() -> None:
    events = parse_trace(load("dual_stack_v4_mapped.txt"))
    raw = lines("dual_stack_v4_mapped.txt")
    assert any("family=AF_INET6" in line for line in raw)
    assert {e.local.host for e in events} == {LO}


def test_listener_events_have_no_remote() -> None:
    events = parse_trace(load("resets_linger_and_refused.txt"))
    listener = [e for e in events if e.kind == "state" and e.old == S.LISTEN and e.new == S.CLOSE]
    assert len(listener) == 1
    assert listener[0].local == Address(LO, 34259)
    assert listener[0].remote is None
    assert listener[0].ports == (34259, 0)


def test_resets_carry_sender_state_and_reason() -> None:
    events = parse_trace(load("resets_linger_and_refused.txt"))
    sent = [e for e in events if e.kind == "send_reset"]
    received = [e for e in events if e.kind == "receive_reset"]
    # SO_LINGER 0 close: the client sends the RST from a socket already in CLOSE.
    assert sent[0].local == Address(LO, 35800)
    assert sent[0].remote == Address(LO, 34259)
    assert sent[0].state is S.CLOSE
    assert sent[0].reason == "TCP_STATE"
    # Connection refused: no socket, state UNKNOWN; the RST is sent from the closed port.
    assert sent[1].local == Address(LO, 34259)
    assert sent[1].remote == Address(LO, 35812)
    assert sent[1].state is None
    assert sent[1].reason == "NO_SOCKET"
    assert [(e.local.port, e.ports[1]) for e in received] == [(34259, 35800), (35812, 34259)]
    assert all(e.old is None and e.new is None for e in sent + received)


def test_send_reset_with_bracketed_ipv4_mapped_sockaddr() -> None:
    events = parse_trace(load("defer_accept_abort_on_close.txt"))
    (sent,) = [e for e in events if e.kind == "send_reset"]
    assert sent.local == Address(LO, 38187)
    assert sent.remote == Address(LO, 52208)
    assert sent.reason == "TCP_ABORT_ON_CLOSE"


def test_syn_retransmit_reports_the_socket_state() -> None:
    events = parse_trace(load("syn_retransmit.txt"))
    (retransmit,) = [e for e in events if e.kind == "retransmit"]
    assert retransmit.state is S.SYN_SENT
    assert retransmit.local == Address(LO, 35836)
    assert retransmit.remote == Address(LO, 34259)


def test_synack_retransmit_is_reported_from_the_listener_port() -> None:
    events = parse_trace(load("synack_retransmit.txt"))
    (synack,) = [e for e in events if e.kind == "retransmit_synack"]
    assert synack.local == Address(LO, 36285)
    assert synack.remote == Address(LO, 41272)
    assert synack.state is None


def test_lost_and_marker_lines_are_not_events() -> None:
    lost, marker = lines("lost_and_marker.txt")
    assert parse_trace_line(lost) is None
    assert parse_trace_line(marker) is None
    assert parse_lost_line(lost) == 2916
    assert parse_lost_line(marker) is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "# tracer: nop",
        "#                                _-----=> irqs-off/BH-disabled",
        "  python-1 [000] ..... 1.000000: sched_switch: prev_comm=a prev_pid=1",
    ],
)
def test_lines_that_are_not_our_events_are_ignored(line: str) -> None:
    assert parse_trace_line(line) is None


def test_other_protocols_are_ignored() -> None:
    line = lines("loopback_v4_client_closes.txt")[1].replace("IPPROTO_TCP", "IPPROTO_MPTCP")
    assert parse_trace_line(line) is None


def test_task_names_with_spaces_and_dashes_parse() -> None:
    line = lines("loopback_v4_client_closes.txt")[1]
    renamed = re.sub(r"^\s*python-9949", "  my-odd task-name-42", line)
    event = parse_trace_line(renamed)
    assert event is not None
    assert event.new is S.ESTABLISHED


def test_record_tgid_column_is_accepted() -> None:
    line = lines("loopback_v4_client_closes.txt")[1].replace("[001]", "(   9949) [001]")
    assert parse_trace_line(line) is not None


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("newstate=TCP_ESTABLISHED", "newstate=TCP_BOGUS", UnknownStateError),
        ("sport=35794", "sport=70000", TraceParseError),
        ("saddr=127.0.0.1", "saddr=127.0.0.999", TraceParseError),
        ("family=AF_INET", "family=AF_UNIX", TraceParseError),
        (" oldstate=", " oldstate", TraceParseError),
        ("dport=34259 ", "", TraceParseError),
    ],
)
def test_malformed_lines_of_our_events_raise_observer_errors(
    old: str, new: str, error: type[ObserverError]
) -> None:
    line = lines("loopback_v4_client_closes.txt")[1]
    assert old in line
    with pytest.raises(error):
        parse_trace_line(line.replace(old, new, 1))


def test_parse_errors_are_observer_errors() -> None:
    assert issubclass(TraceParseError, ObserverError)
    assert issubclass(UnknownStateError, ObserverError)


# -- fuzz ----------------------------------------------------------------------------------


def _only_none_or_observer_error(line: str) -> None:
    try:
        event = parse_trace_line(line)
    except ObserverError:
        return
    assert event is None or isinstance(event, TraceEvent)


@given(st.text(max_size=400))
def test_fuzz_arbitrary_text_never_escapes_as_another_error(text: str) -> None:
    _only_none_or_observer_error(text)


@given(
    st.sampled_from(EVENT_LINES),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=20),
    st.text(max_size=12),
)
def test_fuzz_mutated_real_lines_never_escape_as_another_error(
    line: str, start: int, length: int, insert: str
) -> None:
    _only_none_or_observer_error(line[:start] + insert + line[start + length :])


@given(st.sampled_from(EVENT_LINES), st.integers(min_value=0, max_value=400))
def test_fuzz_truncated_real_lines_never_escape_as_another_error(line: str, cut: int) -> None:
    _only_none_or_observer_error(line[:cut])


# -- alias table --------------------------------------------------------------------------


def test_every_state_name_in_the_kernel_print_formats_maps() -> None:
    text = load("formats_6.18.txt")
    tables = re.findall(r"__print_symbolic\(REC->(?:old|new)?state,(.*?)\)", text)
    assert len(tables) == 4  # oldstate, newstate, retransmit_skb state, send_reset state
    names = {name for table in tables for name in re.findall(r'"(TCP_\w+)"', table)}
    assert len(names) == 12
    for name in names:
        assert from_trace(name).name == name.removeprefix("TCP_")


@pytest.mark.parametrize("state", list(S))
def test_every_tcp_state_has_its_tracepoint_spelling(state: S) -> None:
    assert TRACE[f"TCP_{state.name}"] is state
    assert from_trace(f"TCP_{state.name}") is state


@pytest.mark.parametrize("spelling", ["ESTABLISHED", "TCP_ESTAB", "tcp_close", "UNKNOWN", ""])
def test_unknown_trace_spellings_raise(spelling: str) -> None:
    with pytest.raises(UnknownStateError, match="trace"):
        from_trace(spelling)


# -- durations ----------------------------------------------------------------------------

C = Address(LO, 40000)
C0 = Address(LO, 0)
SRV = Address(LO, 5000)


def st_event(t: float, local: Address, remote: Address | None, old: S, new: S) -> TraceEvent:
    return TraceEvent(t, "state", local, remote, old, new)


def test_durations_of_a_client_that_connects_and_closes_first() -> None:
    events = [
        st_event(1.0, C0, SRV, S.CLOSE, S.SYN_SENT),
        st_event(1.1, C, SRV, S.SYN_SENT, S.ESTABLISHED),
        st_event(3.0, C, SRV, S.ESTABLISHED, S.FIN_WAIT1),
        st_event(3.2, C, SRV, S.FIN_WAIT1, S.FIN_WAIT2),
        st_event(3.5, C, SRV, S.FIN_WAIT2, S.CLOSE),
    ]
    assert durations(events) == [
        StateSpan(C, SRV, S.SYN_SENT, 1.0, 1.1),  # port 0 replaced by the real one
        StateSpan(C, SRV, S.ESTABLISHED, 1.1, 3.0),
        StateSpan(C, SRV, S.FIN_WAIT1, 3.0, 3.2),
        StateSpan(C, SRV, S.FIN_WAIT2, 3.2, 3.5),
    ]
    assert durations(events)[1].duration == pytest.approx(1.9)


def test_durations_leave_the_current_state_open() -> None:
    events = [
        st_event(1.0, SRV, None, S.CLOSE, S.LISTEN),
        st_event(2.0, SRV, C, S.LISTEN, S.SYN_RECV),
        st_event(2.0001, SRV, C, S.SYN_RECV, S.ESTABLISHED),
    ]
    assert durations(events) == [
        StateSpan(SRV, None, S.LISTEN, 1.0, None),
        StateSpan(SRV, C, S.SYN_RECV, 2.0, 2.0001),
        StateSpan(SRV, C, S.ESTABLISHED, 2.0001, None),
    ]


def test_durations_never_invent_time_wait() -> None:
    spans = durations(parse_trace(load("loopback_v4_client_closes.txt")))
    assert S.TIME_WAIT not in {s.state for s in spans}
    assert S.CLOSE not in {s.state for s in spans}
    client = [s for s in spans if s.local.port == 35794]
    assert [s.state for s in client] == [S.SYN_SENT, S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2]
    assert all(s.left_at is not None for s in spans)


def test_durations_match_concurrent_unbound_connects_oldest_first() -> None:
    c2 = Address(LO, 40001)
    events = [
        st_event(1.0, C0, SRV, S.CLOSE, S.SYN_SENT),
        st_event(1.5, C0, SRV, S.CLOSE, S.SYN_SENT),
        st_event(2.0, C, SRV, S.SYN_SENT, S.ESTABLISHED),
        st_event(2.5, c2, SRV, S.SYN_SENT, S.CLOSE),
    ]
    syn_sent = [s for s in durations(events) if s.state is S.SYN_SENT]
    assert syn_sent == [
        StateSpan(C, SRV, S.SYN_SENT, 1.0, 2.0),
        StateSpan(c2, SRV, S.SYN_SENT, 1.5, 2.5),
    ]


def test_durations_skip_a_state_entered_before_tracing_started() -> None:
    events = [
        st_event(5.0, C, SRV, S.ESTABLISHED, S.FIN_WAIT1),
        st_event(5.1, C, SRV, S.FIN_WAIT1, S.FIN_WAIT2),
    ]
    assert durations(events) == [
        StateSpan(C, SRV, S.FIN_WAIT1, 5.0, 5.1),
        StateSpan(C, SRV, S.FIN_WAIT2, 5.1, None),
    ]


def test_durations_ignore_non_state_events_and_input_order() -> None:
    events = [
        st_event(2.0, C, SRV, S.SYN_SENT, S.ESTABLISHED),
        TraceEvent(1.5, "retransmit", C, SRV, state=S.SYN_SENT),
        st_event(1.0, C, SRV, S.CLOSE, S.SYN_SENT),
    ]
    assert durations(events) == [
        StateSpan(C, SRV, S.SYN_SENT, 1.0, 2.0),
        StateSpan(C, SRV, S.ESTABLISHED, 2.0, None),
    ]


def test_unmatched_unbound_connect_keeps_port_zero_and_stays_open() -> None:
    events = [st_event(1.0, C0, SRV, S.CLOSE, S.SYN_SENT)]
    assert durations(events) == [StateSpan(C0, SRV, S.SYN_SENT, 1.0, None)]


# -- follower set-up that needs no kernel -------------------------------------------------


def test_port_filter_ors_both_directions_of_every_port() -> None:
    assert port_filter([80]) == "sport == 80 || dport == 80"
    assert port_filter([443, 80, 80], tcp_only=True) == (
        "protocol == 6 && (sport == 80 || dport == 80 || sport == 443 || dport == 443)"
    )


@pytest.mark.parametrize(
    ("ports", "run_id"),
    [([], "ok"), ([0], "ok"), ([65536], "ok"), ([80], ""), ([80], "../x"), ([80], "a b")],
)
def test_follower_rejects_bad_ports_and_run_ids(ports: list[int], run_id: str) -> None:
    with pytest.raises(ValueError, match=r"port|run id"):
        TraceFollower(ports, run_id)


def test_follower_rejects_a_tiny_buffer() -> None:
    with pytest.raises(ValueError, match="buffer_kb"):
        TraceFollower([80], "ok", buffer_kb=1)


def test_follower_counts_lost_events() -> None:
    follower = TraceFollower([34259], "unit")
    follower._handle([line.encode() for line in lines("lost_and_marker.txt")])
    assert follower.lost_events == 2916
    assert follower.drain() == []


def test_follower_instance_carries_the_prefix_and_run_id() -> None:
    follower = TraceFollower([80], "run-1")
    assert follower.name == "hslab-run-1"
    assert str(follower.path) == "/sys/kernel/tracing/instances/hslab-run-1"


def test_follower_keeps_only_its_ports_and_hosts_from_unfiltered_events() -> None:
    follower = TraceFollower([34259], "unit", hosts=["::ffff:127.0.0.1"])
    assert follower.hosts == frozenset({LO})
    raw = [line.encode() for line in lines("resets_linger_and_refused.txt")]
    other = (
        lines("syn_retransmit.txt")[0].replace("34259", "1111").replace("127.0.0.1", "10.0.0.1")
    )
    follower._handle([*raw, other.encode()])  # the reader thread's per-batch step
    events = follower.drain()
    assert len(events) == len(parse_trace(load("resets_linger_and_refused.txt")))
    assert all(34259 in e.ports for e in events)


def test_follower_reports_a_parse_error_once_on_drain() -> None:
    follower = TraceFollower([34259], "unit")
    good = lines("loopback_v4_client_closes.txt")[0]
    bad = good.replace("TCP_SYN_SENT", "TCP_NOPE")
    follower._handle([bad.encode(), good.encode()])
    with pytest.raises(UnknownStateError):
        follower.drain()
    assert len(follower.drain()) == 1


def test_capability_and_mount_refuse_without_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    ok, reason = trace_capability(tmp_path)
    assert not ok
    assert "root" in reason
    with pytest.raises(MissingDependencyError, match="root"):
        ensure_tracefs(tmp_path)
