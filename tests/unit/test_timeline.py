"""The transition stream reconciled with the table (lab.timeline), on hand-made records."""

from __future__ import annotations

from typing import Any

from handshake_lab.lab.timeline import Key, reconcile
from handshake_lab.topo.nft import HoldKind, hold_matches

C, S = "127.0.0.1:40000", "127.0.0.1:8080"


def traced(t: float, local: str, remote: str | None, old: str, new: str) -> dict[str, Any]:
    return {
        "t_ms": t,
        "side": "x",
        "old": old,
        "new": new,
        "cause": None,
        "local": local,
        "remote": remote,
    }


def test_a_close_traced_while_the_table_shows_time_wait_is_time_wait() -> None:
    known: dict[Key, str] = {(C, S): "FIN_WAIT2"}
    out = reconcile(
        [traced(10, C, S, "FIN_WAIT2", "CLOSE")], {(C, S): ("client", "TIME_WAIT")}, 20, {}, known
    )
    assert [(r["old"], r["new"], r.get("traced")) for r in out] == [
        ("FIN_WAIT2", "TIME_WAIT", "CLOSE")
    ]
    assert known[(C, S)] == "TIME_WAIT"


def test_a_close_traced_after_the_read_is_checked_against_the_later_table() -> None:
    out = reconcile([traced(30, C, S, "FIN_WAIT2", "CLOSE")], {}, 20, {(C, S): "TIME_WAIT"}, {})
    assert out[0]["new"] == "TIME_WAIT"
    gone = reconcile([traced(30, C, S, "LAST_ACK", "CLOSE")], {}, 20, {}, {})
    assert gone[0]["new"] == "CLOSE"  # no timewait socket: really closed


def test_a_child_socket_starts_from_the_request_socket_the_table_showed() -> None:
    known: dict[Key, str] = {}
    first = reconcile([], {(S, C): ("server", "SYN_RECV")}, 5, {}, known)
    assert [(r["old"], r["new"], r["source"]) for r in first] == [("ABSENT", "SYN_RECV", "table")]
    later = reconcile(
        [traced(9, S, C, "LISTEN", "SYN_RECV"), traced(9.1, S, C, "SYN_RECV", "ESTABLISHED")],
        {(S, C): ("server", "ESTABLISHED")},
        12,
        {},
        known,
    )
    # No LISTEN -> SYN_RECV: the listener never moved, and SYN_RECV -> SYN_RECV is no move.
    assert [(r["old"], r["new"], r["cause"]) for r in later] == [("SYN_RECV", "ESTABLISHED", None)]


def test_a_child_socket_nobody_saw_half_open_starts_absent_and_is_caused_by_the_ack() -> None:
    out = reconcile([traced(1, S, C, "LISTEN", "SYN_RECV")], {}, 5, {}, {})
    assert (out[0]["old"], out[0]["new"], out[0]["cause"]) == ("ABSENT", "SYN_RECV", "ACK")


def test_a_child_on_a_4_tuple_in_time_wait_ends_time_wait_by_the_syn_then_starts_absent() -> None:
    # time-wait-syn: a newer SYN reopens the server's TIME_WAIT; the SYN ends the timewait
    # socket (untraced), the final ACK creates the child. Not "TIME_WAIT -> SYN_RECV after ACK".
    known: dict[Key, str] = {(S, C): "TIME_WAIT"}
    out = reconcile(
        [traced(1, S, C, "LISTEN", "SYN_RECV"), traced(2, S, C, "SYN_RECV", "ESTABLISHED")],
        {(S, C): ("server", "ESTABLISHED")},
        5,
        {},
        known,
    )
    assert [(r["t_ms"], r["old"], r["new"], r["cause"]) for r in out] == [
        (1, "TIME_WAIT", "ABSENT", "SYN"),
        (1, "ABSENT", "SYN_RECV", "ACK"),
        (2, "SYN_RECV", "ESTABLISHED", None),
    ]
    assert known[(S, C)] == "ESTABLISHED"


def test_moves_the_stream_cannot_see_come_from_the_table_at_the_read() -> None:
    known: dict[Key, str] = {(C, S): "FIN_WAIT2"}
    out = reconcile([], {(C, S): ("client", "TIME_WAIT")}, 50, {}, known)
    assert [(r["t_ms"], r["old"], r["new"], r["source"]) for r in out] == [
        (50, "FIN_WAIT2", "TIME_WAIT", "table")
    ]
    again = reconcile([], {(C, S): ("client", "TIME_WAIT")}, 60, {}, known)
    assert again == []  # nothing new: nothing added
    gone = reconcile([], {(C, S): ("client", "ABSENT")}, 70, {}, known)
    assert [(r["old"], r["new"]) for r in gone] == [("TIME_WAIT", "ABSENT")]


def test_a_table_read_between_traced_moves_is_placed_in_time() -> None:
    out = reconcile(
        [traced(1, C, S, "CLOSE", "SYN_SENT"), traced(9, C, S, "ESTABLISHED", "FIN_WAIT1")],
        {(C, S): ("client", "ESTABLISHED")},
        5,
        {},
        {},
    )
    assert [(r["t_ms"], r["new"], r["source"]) for r in out] == [
        (1, "SYN_SENT", "trace"),
        (5, "ESTABLISHED", "table"),
        (9, "FIN_WAIT1", "trace"),
    ]


def test_hold_matches_mirrors_the_nft_rules() -> None:
    assert hold_matches(HoldKind.DROP_SYN, "SYN", 0)
    assert hold_matches(HoldKind.DROP_SYN, "SYN,ECE,CWR", 0)  # ECN flags do not count
    assert not hold_matches(HoldKind.DROP_SYN, "SYN,ACK", 0)
    assert hold_matches(HoldKind.DROP_SYNACK, "SYN,ACK", 0)
    assert hold_matches(HoldKind.DROP_PURE_ACK, "ACK", 0)
    assert not hold_matches(HoldKind.DROP_PURE_ACK, "ACK", 5)  # data: not a pure ACK
    assert not hold_matches(HoldKind.DROP_ACK_OF_FIN, "FIN,ACK", 0)
    assert hold_matches(HoldKind.DROP_FIN, "FIN,PSH,ACK", 3)
    assert hold_matches("drop_rst", "RST,ACK", 0)
    assert not hold_matches("hold_fin", "ACK", 0)
