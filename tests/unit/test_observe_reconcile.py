"""reconcile: several sources side by side, matched by exact 4-tuple."""

from __future__ import annotations

from handshake_lab.observe.base import Address, SocketRecord, Timer
from handshake_lab.observe.fake import FakeObserver, make_record
from handshake_lab.observe.reconcile import SourceView, index, reconcile, reconcile_all
from handshake_lab.tcp.states import TcpState

SERVER = Address("127.0.0.1", 8000)
CLIENT = Address("127.0.0.1", 50000)
TW_TIMER = Timer("timewait", 59.0, 0)


def snapshots(**observers: FakeObserver) -> dict[str, list[SocketRecord]]:
    return {name: observer.snapshot([8000]) for name, observer in observers.items()}


def test_sources_that_report_the_same_state_agree_with_no_note() -> None:
    ss = FakeObserver("ss", [make_record("ss", TcpState.ESTABLISHED, CLIENT, SERVER)])
    ps = FakeObserver(
        "psutil", [make_record("psutil", TcpState.ESTABLISHED, CLIENT, SERVER, pid=99)]
    )
    result = reconcile(snapshots(ss=ss, psutil=ps), CLIENT, SERVER)
    assert result.state is TcpState.ESTABLISHED
    assert result.agree
    assert result.note is None
    assert result.pid == 99
    assert (result.local, result.remote) == (CLIENT, SERVER)
    assert list(result.sources) == ["ss", "psutil"]
    assert result.sources["ss"].raw == "ESTABLISHED"


def test_a_source_that_does_not_see_the_socket_is_listed_as_absent() -> None:
    ss = FakeObserver(
        "ss",
        [
            make_record(
                "ss", TcpState.TIME_WAIT, CLIENT, SERVER, raw_state="TIME-WAIT", timer=TW_TIMER
            )
        ],
    )
    ps = FakeObserver("psutil", [])
    result = reconcile(snapshots(ss=ss, psutil=ps), CLIENT, SERVER)
    assert result.state is TcpState.TIME_WAIT
    assert not result.agree
    assert result.sources["psutil"] == SourceView(state=None, raw=None, record=None)
    assert result.sources["ss"].raw == "TIME-WAIT"
    assert result.note == "ss says TIME_WAIT; psutil does not see it"
    assert result.timer == TW_TIMER


def test_disagreeing_sources_prefer_the_first_and_say_both_with_read_gap() -> None:
    ss = FakeObserver("ss", [make_record("ss", TcpState.FIN_WAIT2, CLIENT, SERVER)])
    ps = FakeObserver("psutil", [make_record("psutil", TcpState.TIME_WAIT, CLIENT, SERVER)])
    result = reconcile(
        snapshots(ss=ss, psutil=ps), CLIENT, SERVER, read_at={"ss": 10.000, "psutil": 10.002}
    )
    assert result.state is TcpState.FIN_WAIT2
    assert not result.agree
    assert result.note == "ss says FIN_WAIT2, psutil says TIME_WAIT (read 2 ms apart)"


def test_when_the_first_source_misses_the_socket_the_state_comes_from_one_that_sees_it() -> None:
    ss = FakeObserver("ss", [])
    ps = FakeObserver("psutil", [make_record("psutil", TcpState.CLOSE_WAIT, SERVER, CLIENT)])
    result = reconcile(snapshots(ss=ss, psutil=ps), SERVER, CLIENT)
    assert result.state is TcpState.CLOSE_WAIT
    assert result.note == "psutil says CLOSE_WAIT; ss does not see it"


def test_a_socket_no_source_sees_is_absent_and_that_is_agreement() -> None:
    result = reconcile({"ss": [], "psutil": []}, CLIENT, SERVER)
    assert result.state is None
    assert result.agree
    assert result.note is None
    assert result.timer is None
    assert result.pid is None


def test_several_missing_sources_are_named_together() -> None:
    ss = [make_record("ss", TcpState.ESTABLISHED, CLIENT, SERVER)]
    result = reconcile({"ss": ss, "psutil": [], "netlink": []}, CLIENT, SERVER)
    assert result.note == "ss says ESTABLISHED; psutil and netlink do not see it"


def test_a_listener_matches_by_local_address_and_no_peer() -> None:
    listener = make_record("ss", TcpState.LISTEN, SERVER)
    accepted = make_record("ss", TcpState.ESTABLISHED, SERVER, CLIENT)
    result = reconcile({"ss": [accepted, listener]}, SERVER, None)
    assert result.state is TcpState.LISTEN
    assert result.remote is None


def test_a_wildcard_listener_does_not_match_a_specific_local_address() -> None:
    wildcard = make_record("ss", TcpState.LISTEN, "0.0.0.0:8000")
    result = reconcile({"ss": [wildcard]}, SERVER, None)
    assert result.state is None


def test_the_two_ends_of_a_connection_are_different_sockets() -> None:
    client_end = make_record("ss", TcpState.FIN_WAIT2, CLIENT, SERVER)
    server_end = make_record("ss", TcpState.CLOSE_WAIT, SERVER, CLIENT)
    both = {"ss": [client_end, server_end]}
    assert reconcile(both, CLIENT, SERVER).state is TcpState.FIN_WAIT2
    assert reconcile(both, SERVER, CLIENT).state is TcpState.CLOSE_WAIT


def test_pid_comes_from_whichever_source_knows_it() -> None:
    ss = [make_record("ss", TcpState.ESTABLISHED, CLIENT, SERVER)]
    ps = [make_record("psutil", TcpState.ESTABLISHED, CLIENT, SERVER, pid=1234)]
    assert reconcile({"ss": ss, "psutil": ps}, CLIENT, SERVER).pid == 1234


def test_index_keeps_the_first_record_of_a_repeated_key() -> None:
    first = make_record("ss", TcpState.LISTEN, SERVER, pid=1)
    second = make_record("ss", TcpState.LISTEN, SERVER, pid=2)
    assert index([first, second]) == {(SERVER, None): first}


def test_reconcile_all_lists_every_socket_any_source_sees_in_address_order() -> None:
    listener = make_record("ss", TcpState.LISTEN, SERVER)
    server_end = make_record("ss", TcpState.ESTABLISHED, SERVER, CLIENT)
    client_end = make_record("psutil", TcpState.ESTABLISHED, CLIENT, SERVER)
    results = reconcile_all({"ss": [server_end, listener], "psutil": [client_end]})
    assert [(r.local, r.remote, r.agree) for r in results] == [
        (SERVER, None, False),
        (SERVER, CLIENT, False),
        (CLIENT, SERVER, False),
    ]
