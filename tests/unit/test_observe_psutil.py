"""PsutilObserver's translation of psutil connections, with psutil.net_connections faked."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import psutil
import pytest

from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import UnknownStateError
from handshake_lab.observe.base import Address, Observer
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.tcp.states import TcpState


class Addr(NamedTuple):
    ip: str
    port: int


class Conn(NamedTuple):
    laddr: Addr | tuple[()]
    raddr: Addr | tuple[()]
    status: str
    pid: int | None


def install(monkeypatch: pytest.MonkeyPatch, result: list[Conn] | Exception) -> list[str]:
    kinds: list[str] = []

    def net_connections(kind: str = "inet") -> list[Conn]:
        kinds.append(kind)
        if isinstance(result, Exception):
            raise result
        return result

    fake: Callable[..., list[Conn]] = net_connections
    monkeypatch.setattr(psutil, "net_connections", fake)
    return kinds


def test_psutil_observer_is_an_observer_named_psutil() -> None:
    assert isinstance(PsutilObserver(), Observer)
    assert PsutilObserver().name == "psutil"


def test_reads_the_system_wide_tcp_table(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = install(monkeypatch, [])
    PsutilObserver().snapshot()
    assert kinds == ["tcp"]


def test_connections_become_records_with_state_addresses_and_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(
        monkeypatch,
        [
            Conn(Addr("127.0.0.1", 8000), (), "LISTEN", 42),
            Conn(Addr("127.0.0.1", 50000), Addr("127.0.0.1", 8000), "TIME_WAIT", None),
            Conn(
                Addr("::ffff:127.0.0.1", 8000), Addr("::ffff:127.0.0.1", 50001), "ESTABLISHED", 7
            ),
        ],
    )
    records = PsutilObserver().snapshot()
    assert [(r.state, r.raw_state, r.local, r.remote, r.pid) for r in records] == [
        (TcpState.LISTEN, "LISTEN", Address("127.0.0.1", 8000), None, 42),
        (
            TcpState.TIME_WAIT,
            "TIME_WAIT",
            Address("127.0.0.1", 50000),
            Address("127.0.0.1", 8000),
            None,
        ),
        (
            TcpState.ESTABLISHED,
            "ESTABLISHED",
            Address("127.0.0.1", 8000),
            Address("127.0.0.1", 50001),
            7,
        ),
    ]
    assert all(r.source == "psutil" and r.timer is None for r in records)


def test_snapshot_keeps_only_sockets_on_the_asked_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    install(
        monkeypatch,
        [
            Conn(Addr("127.0.0.1", 8000), (), "LISTEN", 1),
            Conn(Addr("127.0.0.1", 9000), (), "LISTEN", 1),
            Conn(Addr("127.0.0.1", 50000), Addr("127.0.0.1", 8000), "ESTABLISHED", 1),
        ],
    )
    records = PsutilObserver().snapshot([8000])
    assert [str(r.local) for r in records] == ["127.0.0.1:8000", "127.0.0.1:50000"]


def test_a_socket_without_a_local_port_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, [Conn((), (), "CLOSE", 1)])
    assert PsutilObserver().snapshot() == []


def test_psutil_none_status_raises_instead_of_becoming_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, [Conn(Addr("127.0.0.1", 1), (), "NONE", 1)])
    with pytest.raises(UnknownStateError, match="'NONE'"):
        PsutilObserver().snapshot()


def test_access_denied_becomes_observer_error_with_its_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    denied = psutil.AccessDenied()
    install(monkeypatch, denied)
    with pytest.raises(ObserverError, match="access denied") as caught:
        PsutilObserver().snapshot()
    assert caught.value.__cause__ is denied


@pytest.mark.parametrize("error", [psutil.Error("boom"), PermissionError(13, "Permission denied")])
def test_other_psutil_and_os_errors_become_observer_errors(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    install(monkeypatch, error)
    with pytest.raises(ObserverError, match="psutil failed") as caught:
        PsutilObserver().snapshot()
    assert caught.value.__cause__ is error


def test_an_address_psutil_should_never_give_becomes_observer_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, [Conn(Addr("not-an-ip", 1), (), "LISTEN", 1)])
    with pytest.raises(ObserverError, match="not-an-ip"):
        PsutilObserver().snapshot()


def test_psutil_kind_is_checked() -> None:
    import pytest  # noqa: PLC0415

    from handshake_lab.observe.psutil_observer import PsutilObserver  # noqa: PLC0415

    assert PsutilObserver(kind="tcp4").kind == "tcp4"
    with pytest.raises(ValueError, match="kind"):
        PsutilObserver(kind="udp")
