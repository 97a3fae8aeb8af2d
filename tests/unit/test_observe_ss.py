"""parse_ss on real captured `ss -tanoH` output (iproute2 6.1, kernel 6.18), timer quirks included.

The files in data/ss/ were captured on loopback sockets made for the purpose (listen, connect,
shutdown(SHUT_WR), close in both orders, listen(0)+filler for SYN-SENT, dual-stack listener for
v4-mapped, SO_BINDTODEVICE for the %lo suffix, keepalive idles of 30 s, 90 s, 600 s and the
default 7200 s), with ss's own port filter, at 0 s, 51 s and 59.7 s into TIME-WAIT.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_lab import tools
from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import UnknownStateError
from handshake_lab.observe.base import Address, Observer, SocketRecord, Timer
from handshake_lab.observe.ss import (
    MISSING_SS,
    SsObserver,
    parse_duration,
    parse_line,
    parse_ss,
    parse_timer,
    port_filter,
    ss_command,
)
from handshake_lab.tcp.states import TcpState

DATA = Path(__file__).parent / "data" / "ss"

Row = tuple[TcpState, str, str | None, Timer | None]

# Tools run by full path (found in /usr/sbin too when PATH lacks it: handshake_lab.tools).
SS, IP = tools.command("ss"), tools.command("ip")


def captured(name: str) -> list[SocketRecord]:
    return parse_ss((DATA / name).read_text())


def rows(records: list[SocketRecord]) -> list[Row]:
    return [
        (r.state, str(r.local), None if r.remote is None else str(r.remote), r.timer)
        for r in records
    ]


ESTAB, LISTEN = TcpState.ESTABLISHED, TcpState.LISTEN
TW = TcpState.TIME_WAIT


def test_captured_listen_established_and_half_close() -> None:
    records = captured("v4_listen_estab_halfclose.txt")
    assert rows(records) == [
        (LISTEN, "127.0.0.1:53793", None, None),
        (TcpState.CLOSE_WAIT, "127.0.0.1:53793", "127.0.0.1:45800", None),
        (ESTAB, "127.0.0.1:53793", "127.0.0.1:45792", None),
        (ESTAB, "127.0.0.1:45792", "127.0.0.1:53793", None),
        (TcpState.FIN_WAIT2, "127.0.0.1:45800", "127.0.0.1:53793", None),
    ]
    assert [r.raw_state for r in records] == [
        "LISTEN",
        "CLOSE-WAIT",
        "ESTAB",
        "ESTAB",
        "FIN-WAIT-2",
    ]
    assert all(r.source == "ss" for r in records)


def test_listener_queues_are_backlog_and_pending_connections() -> None:
    listener = captured("v4_listen_estab_halfclose.txt")[0]
    assert (listener.recv_q, listener.send_q) == (0, 8)
    close_wait = captured("v4_listen_estab_halfclose.txt")[1]
    assert close_wait.recv_q == 1  # the FIN counts as one unread byte


def test_captured_ipv6_and_v4_mapped_addresses_are_normalised() -> None:
    assert rows(captured("v6_and_v4_mapped.txt")) == [
        (ESTAB, "127.0.0.1:49334", "127.0.0.1:51471", None),
        (LISTEN, "[::1]:57005", None, None),
        # A dual-stack listener: ss prints the IPv6 any-address as "*".
        (LISTEN, "[::]:51471", None, None),
        (ESTAB, "[::1]:34490", "[::1]:57005", None),
        (ESTAB, "[::1]:57005", "[::1]:34490", None),
        # [::ffff:127.0.0.1] on both ends becomes plain IPv4, matching the client's view.
        (ESTAB, "127.0.0.1:51471", "127.0.0.1:49334", None),
    ]


def test_captured_syn_sent_has_a_retransmit_timer() -> None:
    assert rows(captured("syn_sent.txt")) == [
        (LISTEN, "127.0.0.1:60541", None, None),
        (ESTAB, "127.0.0.1:48074", "127.0.0.1:60541", None),
        (TcpState.SYN_SENT, "127.0.0.1:48080", "127.0.0.1:60541", Timer("on", 0.696, 0)),
        (ESTAB, "127.0.0.1:60541", "127.0.0.1:48074", None),
    ]


def test_captured_listener_queue_full_shows_in_recv_q() -> None:
    listener = captured("syn_sent.txt")[0]
    assert (listener.recv_q, listener.send_q) == (1, 0)


def test_captured_device_bound_listener_drops_the_interface_suffix() -> None:
    assert rows(captured("keepalive_and_bound_to_device.txt")) == [
        (LISTEN, "127.0.0.1:53223", None, None),
        (LISTEN, "127.0.0.1:33645", None, None),
        (ESTAB, "127.0.0.1:36544", "127.0.0.1:53223", Timer("keepalive", 30.0, 0)),
        (ESTAB, "127.0.0.1:53223", "127.0.0.1:36544", None),
    ]


def test_captured_keepalive_timers_in_minutes() -> None:
    timers = [r.timer for r in captured("keepalive_minutes.txt") if r.timer is not None]
    assert timers == [
        Timer("keepalive", 89.0, 0),  # "1min29sec"
        Timer("keepalive", 599.0, 0),  # "9min59sec"
        Timer("keepalive", 7140.0, 0),  # "119min": above 9 minutes the seconds are dropped
    ]


def test_captured_fresh_time_wait_counts_down_from_59_seconds() -> None:
    assert rows(captured("time_wait_fresh.txt")) == [
        (LISTEN, "127.0.0.1:56709", None, None),
        (TW, "127.0.0.1:54342", "127.0.0.1:56709", Timer("timewait", 59.0, 0)),
        (TW, "127.0.0.1:54346", "127.0.0.1:56709", Timer("timewait", 59.0, 0)),
        # An orphaned FIN-WAIT-2 (closed, peer has not closed) runs a timewait timer too.
        (TcpState.FIN_WAIT2, "127.0.0.1:54350", "127.0.0.1:56709", Timer("timewait", 59.0, 0)),
        (TcpState.CLOSE_WAIT, "127.0.0.1:56709", "127.0.0.1:54350", None),
    ]


def test_captured_time_wait_under_ten_seconds_prints_seconds_with_an_ms_suffix() -> None:
    # ss 6.1 printed "8.944ms": that is 8.944 SECONDS, not milliseconds.
    timers = [r.timer for r in captured("time_wait_under_10s.txt") if r.timer is not None]
    assert timers == [
        Timer("timewait", 8.944, 0),
        Timer("timewait", 8.996, 0),
        Timer("timewait", 9.0, 0),  # "9sec": whole seconds keep the "sec" suffix
    ]


def test_captured_time_wait_under_one_second_prints_three_digit_milliseconds() -> None:
    timers = [r.timer for r in captured("time_wait_under_1s.txt") if r.timer is not None]
    assert timers == [
        Timer("timewait", 0.244, 0),
        Timer("timewait", 0.296, 0),
        Timer("timewait", 0.300, 0),
    ]


def test_captured_time_wait_is_gone_after_sixty_seconds() -> None:
    states = [r.state for r in captured("time_wait_gone.txt")]
    assert states == [LISTEN, TcpState.CLOSE_WAIT]


def test_every_captured_line_has_numeric_queues() -> None:
    for path in sorted(DATA.glob("*.txt")):
        for record in parse_ss(path.read_text()):
            assert record.recv_q is not None
            assert record.send_q is not None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("", 0.0),
        ("068ms", 0.068),
        ("244ms", 0.244),
        ("000ms", 0.0),
        ("9.800ms", 9.8),
        ("8.944ms", 8.944),
        ("1.001ms", 1.001),
        ("8.944sec", 8.944),  # newer iproute2 spells the same value this way
        ("1sec", 1.0),
        ("9sec", 9.0),
        ("59sec", 59.0),
        ("1min", 60.0),
        ("1min2sec", 62.0),
        ("1min29sec", 89.0),
        ("9min59sec", 599.0),
        ("10min", 600.0),
        ("119min", 7140.0),
    ],
)
def test_timer_durations_in_every_form_ss_prints(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["68ms", "1.5ms", "9.8sec", "sec", "ms", "min", "-1sec", "1.2.3ms", "5", "1h"]
)
def test_timer_durations_ss_never_prints_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "timer"),
    [
        ("timer:(timewait,9.800ms,0)", Timer("timewait", 9.8, 0)),
        ("timer:(timewait,,0)", Timer("timewait", 0.0, 0)),
        ("timer:(on,200ms,3)", Timer("on", 0.2, 3)),
        ("timer:(keepalive,1min2sec,0)", Timer("keepalive", 62.0, 0)),
        ("timer:(persist,068ms,1)", Timer("persist", 0.068, 1)),
        ("timer:(unknown,1sec,0)", Timer("unknown", 1.0, 0)),
    ],
)
def test_timer_field_names_durations_and_counts(text: str, timer: Timer) -> None:
    assert parse_timer(text) == timer


@pytest.mark.parametrize(
    "text",
    ["timer:(bogus,1sec,0)", "timer:(on,1sec)", "timer:(on,1sec,x)", "timer(on,1sec,0)", "ino:1"],
)
def test_malformed_timer_fields_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"timer|option"):
        parse_timer(text)


def test_empty_timewait_timer_in_a_line_means_zero_seconds_left() -> None:
    record = parse_line(
        "TIME-WAIT 0      0      127.0.0.1:54342 127.0.0.1:56709 timer:(timewait,,0)"
    )
    assert record.timer == Timer("timewait", 0.0, 0)


@pytest.mark.parametrize(
    ("line", "local", "remote"),
    [
        ("LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*", Address("127.0.0.53", 53), None),
        ("LISTEN 0 128 [::]:22 [::]:*", Address("::", 22), None),
        ("LISTEN 0 128 *:22 *:*", Address("::", 22), None),
        (
            "ESTAB 0 0 [fe80::1]%eth0:22 [fe80::2]:50000",
            Address("fe80::1", 22),
            Address("fe80::2", 50000),
        ),
        (
            "ESTAB 0 0 [::ffff:127.0.0.1]:80 [::ffff:127.0.0.1]:5000",
            Address("127.0.0.1", 80),
            Address("127.0.0.1", 5000),
        ),
    ],
)
def test_hand_written_address_forms(line: str, local: Address, remote: Address | None) -> None:
    record = parse_line(line)
    assert (record.local, record.remote) == (local, remote)


@pytest.mark.parametrize(
    ("spelling", "state"),
    [
        ("SYN-RECV", TcpState.SYN_RECV),
        ("FIN-WAIT-1", TcpState.FIN_WAIT1),
        ("LAST-ACK", TcpState.LAST_ACK),
        ("CLOSING", TcpState.CLOSING),
        ("UNCONN", TcpState.CLOSE),
    ],
)
def test_hand_written_lines_for_states_too_short_to_capture(
    spelling: str, state: TcpState
) -> None:
    record = parse_line(f"{spelling} 0 1 127.0.0.1:80 127.0.0.1:5000 timer:(on,206ms,0)")
    assert (record.state, record.raw_state) == (state, spelling)


def test_unknown_state_raises_naming_the_state_and_the_line() -> None:
    line = "NEW-SYN-RECV 0 0 127.0.0.1:80 127.0.0.1:5000"
    with pytest.raises(UnknownStateError, match="NEW-SYN-RECV") as caught:
        parse_ss(line + "\n")
    assert line in str(caught.value)


def test_a_header_line_is_not_silently_taken_for_a_socket() -> None:
    header = "State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process"
    with pytest.raises(ObserverError, match="State"):
        parse_ss(header)


@pytest.mark.parametrize(
    "line",
    [
        "ESTAB 0 0 127.0.0.1:1",
        "ESTAB x 0 127.0.0.1:1 127.0.0.1:2",
        "ESTAB 0 -1 127.0.0.1:1 127.0.0.1:2",
        "ESTAB 0 0 127.0.0.1 127.0.0.1:2",
        "ESTAB 0 0 127.0.0.1:1 127.0.0.1:2 ino:123",
        "ESTAB 0 0 127.0.0.1:1 127.0.0.1:2 timer:(on,1sec,0) timer:(on,1sec,0)",
        "ESTAB 0 0 ::1:1 ::1:2",
        "ESTAB 0 0 [::1:1 [::1]:2",
        "ESTAB 0 0 [::1]x:1 [::1]:2",
        "ESTAB 0 0 127.0.0.1:* 127.0.0.1:2",
        "ESTAB 0 0 127.0.0.1:1 10.0.0.1:*",
        "ESTAB 0 0 300.0.0.1:1 127.0.0.1:2",
        "ESTAB 0 0 127.0.0.1:70000 127.0.0.1:2",
        "ESTAB 0 0 localhost:1 127.0.0.1:2",
    ],
)
def test_malformed_lines_raise_observer_error_naming_the_line(line: str) -> None:
    with pytest.raises(ObserverError) as caught:
        parse_ss(line)
    assert repr(line) in str(caught.value)


def test_blank_lines_and_empty_output_give_no_records() -> None:
    assert parse_ss("") == []
    assert parse_ss("\n  \n") == []


SS_TOKENS = st.sampled_from(
    [
        "ESTAB",
        "LISTEN",
        "TIME-WAIT",
        "0",
        "12",
        "127.0.0.1:80",
        "[::1]:443",
        "*:*",
        "0.0.0.0:*",
        "127.0.0.1%lo:53",
        "timer:(timewait,9.800ms,0)",
        "timer:(on,,0)",
        "[",
        ":",
        "%",
        "*",
    ]
)


@given(st.text())
def test_parse_ss_on_arbitrary_text_returns_records_or_raises_observer_error(text: str) -> None:
    try:
        records = parse_ss(text)
    except ObserverError:
        return
    assert all(isinstance(record, SocketRecord) for record in records)


@given(st.lists(st.lists(SS_TOKENS | st.text(max_size=12), max_size=8), max_size=4))
def test_parse_ss_on_near_miss_lines_returns_records_or_raises_observer_error(
    lines: list[list[str]],
) -> None:
    try:
        records = parse_ss("\n".join(" ".join(tokens) for tokens in lines))
    except ObserverError:
        return
    assert all(isinstance(record, SocketRecord) for record in records)


# --- spawning -----------------------------------------------------------------------------


def test_ss_command_without_ports_lists_every_tcp_socket() -> None:
    assert ss_command() == [SS, "-tanoH"]


def test_ss_command_filters_ports_in_the_kernel() -> None:
    assert ss_command([8080, 80]) == [
        SS,
        "-tanoH",
        "( sport = :80 or dport = :80 or sport = :8080 or dport = :8080 )",
    ]


def test_ss_command_in_a_netns_runs_through_ip_netns_exec() -> None:
    assert ss_command([80], netns="hslab-1") == [
        IP,
        "netns",
        "exec",
        "hslab-1",
        SS,
        "-tanoH",
        "( sport = :80 or dport = :80 )",
    ]


@pytest.mark.parametrize("ports", [[], [0], [65536]])
def test_port_filter_rejects_no_ports_and_impossible_ports(ports: list[int]) -> None:
    with pytest.raises(ValueError, match="port"):
        port_filter(ports)


def fake_ss(tmp_path: Path, body: str) -> str:
    script = tmp_path / "ss"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_ss_observer_is_an_observer_named_ss() -> None:
    observer = SsObserver()
    assert isinstance(observer, Observer)
    assert observer.name == "ss"


def test_missing_ss_binary_says_how_to_install_it(tmp_path: Path) -> None:
    observer = SsObserver(binary=str(tmp_path / "no-such-ss"))
    with pytest.raises(ObserverError, match="apt install iproute2") as caught:
        observer.snapshot([80])
    assert str(caught.value) == MISSING_SS
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_ss_failure_reports_the_first_line_of_its_stderr(tmp_path: Path) -> None:
    binary = fake_ss(tmp_path, 'echo "Error: boom" >&2\necho "second line" >&2\nexit 1\n')
    with pytest.raises(ObserverError, match=r"exit 1\): Error: boom$"):
        SsObserver(binary=binary).snapshot([80])


def test_snapshot_parses_ss_output_and_keeps_only_the_asked_ports(tmp_path: Path) -> None:
    binary = fake_ss(tmp_path, f"cat '{DATA / 'v6_and_v4_mapped.txt'}'\n")
    records = SsObserver(binary=binary).snapshot([57005])
    assert [(r.state, str(r.local)) for r in records] == [
        (LISTEN, "[::1]:57005"),
        (ESTAB, "[::1]:34490"),
        (ESTAB, "[::1]:57005"),
    ]


def test_snapshot_of_no_ports_is_empty_without_running_ss(tmp_path: Path) -> None:
    assert SsObserver(binary=str(tmp_path / "no-such-ss")).snapshot([]) == []


def test_ipv4_only_adds_the_family_flag_before_the_filter() -> None:
    from handshake_lab.observe.ss import ss_command  # noqa: PLC0415

    argv = ss_command([80], ipv4_only=True)
    assert "-4" in argv
    assert argv.index("-4") < len(argv) - 1  # the filter expression stays last
