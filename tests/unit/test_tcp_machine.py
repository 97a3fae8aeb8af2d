"""The TCP state machine: the whole state x event product, the textbook paths, the texts."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_lab.i18n.machine import (
    EVENT_LABELS,
    LANGS,
    describe_table,
    describe_transitions,
    display_width,
    event_label,
    format_transition,
)
from handshake_lab.tcp import (
    EXPLANATION_KEYS,
    LIFECYCLE_ORDER,
    TIME_WAIT_SECONDS,
    TRANSITIONS,
    Connection,
    Event,
    Flags,
    IllegalTransition,
    TcpState,
    path_transitions,
    paths,
    step,
    transitions_from,
    walk,
)

# An independent copy of the machine, written by hand: state, event, next state, segments
# sent ("-" for none). Any edit of the table that adds, removes or redirects a transition
# must be repeated here on purpose.
_EXPECTED_TEXT = """
CLOSE        PASSIVE_OPEN  LISTEN       -
CLOSE        ACTIVE_OPEN   SYN_SENT     SYN
CLOSE        CLOSE         CLOSE        -
CLOSE        RCV_SYN       CLOSE        RST+ACK
CLOSE        RCV_SYN_ACK   CLOSE        RST
LISTEN       CLOSE         CLOSE        -
LISTEN       ABORT         CLOSE        -
LISTEN       RCV_SYN       SYN_RECV     SYN+ACK
LISTEN       RCV_ACK       LISTEN       RST
SYN_SENT     CLOSE         CLOSE        -
SYN_SENT     ABORT         CLOSE        -
SYN_SENT     RCV_SYN       SYN_RECV     SYN+ACK
SYN_SENT     RCV_SYN_ACK   ESTABLISHED  ACK
SYN_SENT     RCV_RST       CLOSE        -
SYN_RECV     CLOSE         FIN_WAIT1    FIN+ACK
SYN_RECV     SEND_EOF      FIN_WAIT1    FIN+ACK
SYN_RECV     ABORT         CLOSE        RST+ACK
SYN_RECV     RCV_SYN       SYN_RECV     SYN+ACK
SYN_RECV     RCV_SYN_ACK   ESTABLISHED  -
SYN_RECV     RCV_ACK       ESTABLISHED  -
SYN_RECV     RCV_FIN       CLOSE_WAIT   ACK
SYN_RECV     RCV_RST       LISTEN       -
ESTABLISHED  CLOSE         FIN_WAIT1    FIN+ACK
ESTABLISHED  SEND_EOF      FIN_WAIT1    FIN+ACK
ESTABLISHED  ABORT         CLOSE        RST+ACK
ESTABLISHED  RCV_FIN       CLOSE_WAIT   ACK
ESTABLISHED  RCV_RST       CLOSE        -
FIN_WAIT1    CLOSE         FIN_WAIT1    -
FIN_WAIT1    ABORT         CLOSE        RST+ACK
FIN_WAIT1    RCV_ACK       FIN_WAIT2    -
FIN_WAIT1    RCV_FIN       CLOSING      ACK
FIN_WAIT1    RCV_FIN_ACK   TIME_WAIT    ACK
FIN_WAIT1    RCV_RST       CLOSE        -
FIN_WAIT2    CLOSE         FIN_WAIT2    -
FIN_WAIT2    ABORT         CLOSE        RST+ACK
FIN_WAIT2    RCV_FIN       TIME_WAIT    ACK
FIN_WAIT2    RCV_RST       CLOSE        -
CLOSING      CLOSE         CLOSING      -
CLOSING      ABORT         CLOSE        -
CLOSING      RCV_ACK       TIME_WAIT    -
CLOSING      RCV_FIN       CLOSING      ACK
CLOSING      RCV_FIN_ACK   TIME_WAIT    ACK
CLOSING      RCV_RST       CLOSE        -
TIME_WAIT    CLOSE         TIME_WAIT    -
TIME_WAIT    RCV_FIN       TIME_WAIT    ACK
TIME_WAIT    RCV_RST       CLOSE        -
TIME_WAIT    TIMEOUT_2MSL  CLOSE        -
CLOSE_WAIT   CLOSE         LAST_ACK     FIN+ACK
CLOSE_WAIT   SEND_EOF      LAST_ACK     FIN+ACK
CLOSE_WAIT   ABORT         CLOSE        RST+ACK
CLOSE_WAIT   RCV_FIN       CLOSE_WAIT   ACK
CLOSE_WAIT   RCV_RST       CLOSE        -
LAST_ACK     CLOSE         LAST_ACK     -
LAST_ACK     ABORT         CLOSE        -
LAST_ACK     RCV_ACK       CLOSE        -
LAST_ACK     RCV_FIN       LAST_ACK     ACK
LAST_ACK     RCV_RST       CLOSE        -
"""


def _parse_expected() -> dict[tuple[TcpState, Event], tuple[TcpState, str]]:
    expected: dict[tuple[TcpState, Event], tuple[TcpState, str]] = {}
    for line in _EXPECTED_TEXT.strip().splitlines():
        state, event, next_state, sends = line.split()
        key = (TcpState[state], Event[event])
        assert key not in expected, f"duplicate row {line!r}"
        expected[key] = (TcpState[next_state], "" if sends == "-" else sends)
    return expected


EXPECTED = _parse_expected()
ALL_PAIRS = list(itertools.product(TcpState, Event))
SYNCHRONIZED = frozenset(
    {
        TcpState.SYN_RECV,
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT1,
        TcpState.FIN_WAIT2,
        TcpState.CLOSING,
        TcpState.TIME_WAIT,
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
    }
)


def test_table_holds_exactly_the_expected_legal_pairs() -> None:
    assert set(TRANSITIONS) == set(EXPECTED)
    assert len(TRANSITIONS) == 57


@pytest.mark.parametrize(
    ("state", "event"), ALL_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in ALL_PAIRS]
)
def test_every_state_event_pair_lands_where_expected_or_raises(
    state: TcpState, event: Event
) -> None:
    connection = Connection(state)
    if (state, event) in EXPECTED:
        next_state, sends = EXPECTED[(state, event)]
        transition = connection.handle(event)
        assert transition is step(state, event)
        assert transition.next_state is next_state
        assert transition.sends_text == sends
        assert connection.state is next_state
        assert [(h.before, h.event) for h in connection.history] == [(state, event)]
    else:
        with pytest.raises(IllegalTransition) as excinfo:
            connection.handle(event)
        assert excinfo.value.state is state
        assert excinfo.value.event is event
        assert connection.state is state
        assert connection.history == ()


def test_illegal_transition_is_a_value_error_naming_the_legal_events() -> None:
    with pytest.raises(ValueError, match=r"RCV_ACK is not legal in ESTABLISHED") as excinfo:
        step(TcpState.ESTABLISHED, Event.RCV_ACK)
    assert "RCV_FIN" in str(excinfo.value)


def test_new_syn_recv_request_socket_has_no_transitions() -> None:
    assert transitions_from(TcpState.NEW_SYN_RECV) == []
    assert describe_transitions(TcpState.NEW_SYN_RECV) == []
    assert all(t.next_state is not TcpState.NEW_SYN_RECV for t in TRANSITIONS.values())
    with pytest.raises(IllegalTransition, match=r"legal there: none"):
        step(TcpState.NEW_SYN_RECV, Event.RCV_ACK)


def test_transitions_from_lists_table_entries_in_event_order() -> None:
    order = list(Event)
    for state in TcpState:
        listed = transitions_from(state)
        events = [event for event, _ in listed]
        assert events == sorted(events, key=order.index)
        assert {(state, e): t for e, t in listed} == {
            k: v for k, v in TRANSITIONS.items() if k[0] is state
        }


# --- textbook paths, by name -------------------------------------------------------------

TEXTBOOK_PATH_NAMES = [
    "handshake_client",
    "handshake_server",
    "simultaneous_open",
    "active_close",
    "passive_close",
    "simultaneous_close",
    "half_close",
    "reset",
]


def test_paths_include_every_textbook_path() -> None:
    assert set(TEXTBOOK_PATH_NAMES) <= set(paths)


@pytest.mark.parametrize("name", sorted(paths))
def test_named_path_visits_its_expected_states(name: str) -> None:
    path = paths[name]
    connection = Connection(path.start)
    visited = [connection.state]
    for event in path.events:
        connection.handle(event)
        visited.append(connection.state)
    assert tuple(visited) == path.states
    assert [t.next_state for t in path_transitions(name)] == list(path.states[1:])


def _sent(name: str) -> list[str]:
    return [t.sends_text for t in path_transitions(name)]


def test_client_handshake_sends_syn_then_ack() -> None:
    assert paths["handshake_client"].states[-1] is TcpState.ESTABLISHED
    assert _sent("handshake_client") == ["SYN", "ACK"]


def test_server_answers_syn_with_syn_ack_and_the_ack_establishes_it() -> None:
    assert paths["handshake_server"].states == (
        TcpState.CLOSE,
        TcpState.LISTEN,
        TcpState.SYN_RECV,
        TcpState.ESTABLISHED,
    )
    assert _sent("handshake_server") == ["", "SYN+ACK", ""]


def test_simultaneous_open_passes_through_syn_recv() -> None:
    assert TcpState.SYN_RECV in paths["simultaneous_open"].states
    assert _sent("simultaneous_open") == ["SYN", "SYN+ACK", ""]


def test_active_closer_waits_in_time_wait_until_the_timer() -> None:
    assert paths["active_close"].states == (
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT1,
        TcpState.FIN_WAIT2,
        TcpState.TIME_WAIT,
        TcpState.CLOSE,
    )
    assert _sent("active_close") == ["FIN+ACK", "", "ACK", ""]
    assert path_transitions("active_close")[-1].key == "time_wait.expired"


def test_passive_closer_goes_close_wait_then_last_ack() -> None:
    assert paths["passive_close"].states == (
        TcpState.ESTABLISHED,
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
        TcpState.CLOSE,
    )
    assert TcpState.TIME_WAIT not in paths["passive_close"].states
    assert _sent("passive_close") == ["ACK", "FIN+ACK", ""]


def test_simultaneous_close_goes_through_closing_to_time_wait() -> None:
    assert paths["simultaneous_close"].states[1:4] == (
        TcpState.FIN_WAIT1,
        TcpState.CLOSING,
        TcpState.TIME_WAIT,
    )


def test_fin_that_acks_our_fin_skips_fin_wait2() -> None:
    transition = step(TcpState.FIN_WAIT1, Event.RCV_FIN_ACK)
    assert transition.next_state is TcpState.TIME_WAIT
    assert transition.sends == (Flags.ACK,)
    assert TcpState.FIN_WAIT2 not in paths["active_close_fin_with_ack"].states


def test_half_close_sends_one_fin_and_later_close_sends_nothing() -> None:
    sent = [flags for t in path_transitions("half_close") for flags in t.sends]
    assert sum(Flags.FIN in flags for flags in sent) == 1
    assert step(TcpState.FIN_WAIT2, Event.CLOSE).sends == ()
    assert (
        step(TcpState.ESTABLISHED, Event.SEND_EOF).key
        != step(TcpState.ESTABLISHED, Event.CLOSE).key
    )


def test_half_closed_side_still_receives_the_peers_fin() -> None:
    # After shutdown(SHUT_WR) the connection can still take the peer's data and FIN.
    connection = Connection(TcpState.ESTABLISHED)
    connection.handle(Event.SEND_EOF)
    reached = connection.handle(Event.RCV_ACK).next_state
    assert reached is TcpState.FIN_WAIT2
    assert connection.handle(Event.RCV_FIN).sends == (Flags.ACK,)
    assert connection.state is TcpState.TIME_WAIT


def test_shutdown_twice_is_illegal_because_the_fin_is_already_out() -> None:
    connection = Connection(TcpState.ESTABLISHED)
    connection.handle(Event.SEND_EOF)
    with pytest.raises(IllegalTransition):
        connection.handle(Event.SEND_EOF)
    assert connection.state is TcpState.FIN_WAIT1


def test_lost_last_ack_retransmitted_fin_is_reacked_in_time_wait() -> None:
    transition = step(TcpState.TIME_WAIT, Event.RCV_FIN)
    assert transition.next_state is TcpState.TIME_WAIT
    assert transition.sends == (Flags.ACK,)
    assert transition.key == "time_wait.reack"
    assert paths["lost_last_ack"].states.count(TcpState.TIME_WAIT) == 2


def test_rst_ends_every_synchronized_connection() -> None:
    for state in SYNCHRONIZED - {TcpState.SYN_RECV}:
        assert step(state, Event.RCV_RST).next_state is TcpState.CLOSE, state
    assert paths["reset"].states == (TcpState.ESTABLISHED, TcpState.CLOSE)


def test_rst_on_a_half_open_request_returns_the_server_to_listen() -> None:
    assert paths["old_duplicate_syn"].states == (
        TcpState.LISTEN,
        TcpState.SYN_RECV,
        TcpState.LISTEN,
    )


def test_host_without_the_connection_resets_a_stray_syn_ack() -> None:
    assert step(TcpState.CLOSE, Event.RCV_SYN_ACK).sends == (Flags.RST,)


def test_connect_to_a_closed_port_is_refused_with_rst() -> None:
    assert step(TcpState.CLOSE, Event.RCV_SYN).sends == (Flags.RST | Flags.ACK,)
    assert paths["connection_refused"].states[-1] is TcpState.CLOSE


def test_abort_sends_rst_only_from_states_the_rfc_names() -> None:
    rst_states = {
        TcpState.SYN_RECV,
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT1,
        TcpState.FIN_WAIT2,
        TcpState.CLOSE_WAIT,
    }
    for state, transition in ((s, t) for (s, e), t in TRANSITIONS.items() if e is Event.ABORT):
        assert transition.next_state is TcpState.CLOSE
        sends_rst = any(Flags.RST in flags for flags in transition.sends)
        assert sends_rst == (state in rst_states), state
    assert all((s, Event.ABORT) in TRANSITIONS for s in rst_states)


def test_every_segment_sent_from_a_synchronized_state_carries_ack() -> None:
    for (state, _), transition in TRANSITIONS.items():
        if state in SYNCHRONIZED:
            assert all(Flags.ACK in flags for flags in transition.sends), state


def test_only_fin_senders_reach_time_wait() -> None:
    sources = {s for (s, _), t in TRANSITIONS.items() if t.next_state is TcpState.TIME_WAIT}
    assert sources == {
        TcpState.FIN_WAIT1,
        TcpState.FIN_WAIT2,
        TcpState.CLOSING,
        TcpState.TIME_WAIT,
    }


def test_time_wait_is_linux_fixed_sixty_seconds() -> None:
    assert TIME_WAIT_SECONDS == 60.0
    assert "60" in event_label(Event.TIMEOUT_2MSL, "en")


def test_connection_history_records_each_legal_step_in_order() -> None:
    connection = Connection()
    assert connection.state is TcpState.CLOSE
    connection.handle(Event.ACTIVE_OPEN)
    with pytest.raises(IllegalTransition):
        connection.handle(Event.RCV_FIN)
    connection.handle(Event.RCV_SYN_ACK)
    assert [(h.before, h.event, h.transition.next_state) for h in connection.history] == [
        (TcpState.CLOSE, Event.ACTIVE_OPEN, TcpState.SYN_SENT),
        (TcpState.SYN_SENT, Event.RCV_SYN_ACK, TcpState.ESTABLISHED),
    ]
    assert "ESTABLISHED" in repr(connection)


def test_walk_stops_at_the_first_illegal_event() -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        walk(TcpState.CLOSE, [Event.ACTIVE_OPEN, Event.RCV_ACK])
    assert excinfo.value.state is TcpState.SYN_SENT


def test_event_kinds_split_into_calls_segments_and_timer() -> None:
    calls = {e for e in Event if e.is_app_call}
    segments = {e for e in Event if e.is_segment}
    assert calls == {
        Event.PASSIVE_OPEN,
        Event.ACTIVE_OPEN,
        Event.CLOSE,
        Event.SEND_EOF,
        Event.ABORT,
    }
    assert set(Event) - calls - segments == {Event.TIMEOUT_2MSL}
    assert not calls & segments


# --- generated text ----------------------------------------------------------------------


def test_describe_transitions_in_english_reads_like_the_diagram() -> None:
    lines = describe_transitions(TcpState.FIN_WAIT2, "en")
    assert "FIN_WAIT2 --receive FIN / send ACK--> TIME_WAIT" in lines
    assert "FIN_WAIT2 --close()--> FIN_WAIT2" in lines
    assert len(lines) == len(transitions_from(TcpState.FIN_WAIT2))


def test_describe_transitions_in_chinese_uses_the_chinese_labels() -> None:
    lines = describe_transitions(TcpState.FIN_WAIT2, "zh")
    assert "FIN_WAIT2 --收到 FIN / 发送 ACK--> TIME_WAIT" in lines


def test_format_transition_of_an_illegal_pair_raises() -> None:
    with pytest.raises(IllegalTransition):
        format_transition(TcpState.LISTEN, Event.RCV_FIN)


@pytest.mark.parametrize("lang", LANGS)
def test_whole_table_description_fits_80_columns(lang: str) -> None:
    lines = describe_table(lang)
    assert len(lines) == len(TRANSITIONS)
    assert all(display_width(line) <= 80 for line in lines), max(lines, key=display_width)
    assert lines[0].startswith("CLOSE ")


def test_lifecycle_order_lists_every_state_once() -> None:
    assert sorted(LIFECYCLE_ORDER) == sorted(TcpState)


@pytest.mark.parametrize("lang", LANGS)
def test_every_event_has_a_distinct_label(lang: str) -> None:
    labels = [EVENT_LABELS[event][lang] for event in Event]
    assert all(labels)
    assert len(set(labels)) == len(labels)


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown language"):
        describe_transitions(TcpState.LISTEN, "fr")


def test_display_width_counts_wide_characters_twice() -> None:
    assert display_width("ACK") == 3
    assert display_width("收到") == 4


def test_explanation_keys_are_dotted_lowercase_names() -> None:
    assert {t.key for t in TRANSITIONS.values()} == EXPLANATION_KEYS
    for key in EXPLANATION_KEYS:
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", key), key


def test_every_transition_cites_an_rfc_9293_chapter_3_section() -> None:
    for transition in TRANSITIONS.values():
        assert re.fullmatch(r"3(\.\d+)+", transition.rfc), transition


# --- properties --------------------------------------------------------------------------


@given(
    start=st.sampled_from(list(TcpState)),
    events=st.lists(st.sampled_from(list(Event)), max_size=40),
)
def test_random_event_sequences_stay_in_the_enum_and_errors_change_nothing(
    start: TcpState, events: list[Event]
) -> None:
    connection = Connection(start)
    for event in events:
        before, history_len = connection.state, len(connection.history)
        try:
            transition = connection.handle(event)
        except IllegalTransition:
            assert (before, event) not in EXPECTED
            assert connection.state is before
            assert len(connection.history) == history_len
        else:
            assert transition.next_state is EXPECTED[(before, event)][0]
            assert len(connection.history) == history_len + 1
        assert isinstance(connection.state, TcpState)


# --- purity of the package ---------------------------------------------------------------

_FORBIDDEN = {"socket", "asyncio", "subprocess", "time", "select", "selectors", "threading"}


def test_tcp_package_imports_no_io_and_nothing_of_ours_outside_tcp() -> None:
    package = Path(__file__).resolve().parents[2] / "handshake_lab" / "tcp"
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in _FORBIDDEN, (source.name, name)
                if name.startswith("handshake_lab"):
                    assert name.startswith("handshake_lab.tcp"), (source.name, name)
