"""One conformance suite, run against every real observer backend on real loopback sockets.

Each test makes its own listener on an ephemeral 127.0.0.1 port, so 4-tuples never repeat
between tests and a TIME_WAIT left by one test cannot collide with another. Sockets still open
at the end are closed with SO_LINGER 0 (RST), which leaves no TIME_WAIT behind. Waits are
bounded polls: the kernel changes state asynchronously even on loopback.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from handshake_lab.observe.base import Address, Observer, SocketRecord
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.reconcile import Reconciled, index, reconcile
from handshake_lab.observe.ss import SsObserver
from handshake_lab.tcp.states import TcpState

T = TypeVar("T")

BACKENDS: dict[str, Callable[[], Observer]] = {
    "ss": SsObserver,
    "psutil": PsutilObserver,
    "netlink": NetlinkObserver,
}


@pytest.fixture(params=sorted(BACKENDS))
def observer(request: pytest.FixtureRequest) -> Observer:
    name: str = request.param
    return BACKENDS[name]()


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 2.0) -> T:
    """Poll ``read`` until ``done`` holds or ``timeout`` passes; return the last value read."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.01)
        value = read()
    return value


def find(
    observer: Observer, port: int, local: Address, remote: Address | None
) -> SocketRecord | None:
    return index(observer.snapshot([port])).get((local, remote))


def wait_for_state(
    observer: Observer,
    port: int,
    local: Address,
    remote: Address | None,
    state: TcpState,
) -> SocketRecord | None:
    return wait_for(
        lambda: find(observer, port, local, remote),
        lambda record: record is not None and record.state is state,
    )


def addr(sock: socket.socket, *, peer: bool = False) -> Address:
    host, port = (sock.getpeername() if peer else sock.getsockname())[:2]
    return Address(host, port)


def listen(sockets: list[socket.socket], host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(listener)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((host, 0))
    listener.listen(8)
    port: int = listener.getsockname()[1]
    return listener, port


def connected_pair(
    sockets: list[socket.socket], connect_host: str = "127.0.0.1", listen_host: str = "127.0.0.1"
) -> tuple[socket.socket, socket.socket, int]:
    listener, port = listen(sockets, listen_host)
    client = socket.create_connection((connect_host, port), timeout=2.0)
    sockets.append(client)
    server, _ = listener.accept()
    sockets.append(server)
    return client, server, port


def test_backend_implements_the_observer_protocol(observer: Observer) -> None:
    assert isinstance(observer, Observer)
    assert observer.name in BACKENDS


def test_backend_reports_a_listener_with_no_peer(
    observer: Observer, sockets: list[socket.socket]
) -> None:
    _, port = listen(sockets)
    record = wait_for_state(observer, port, Address("127.0.0.1", port), None, TcpState.LISTEN)
    assert record is not None
    assert record.state is TcpState.LISTEN
    assert record.source == observer.name


def test_backend_reports_both_ends_established_with_mirrored_4_tuples(
    observer: Observer, sockets: list[socket.socket]
) -> None:
    client, server, port = connected_pair(sockets)
    client_end = wait_for_state(
        observer, port, addr(client), addr(client, peer=True), TcpState.ESTABLISHED
    )
    server_end = wait_for_state(
        observer, port, addr(server), addr(server, peer=True), TcpState.ESTABLISHED
    )
    assert client_end is not None
    assert server_end is not None
    assert (client_end.state, server_end.state) == (TcpState.ESTABLISHED, TcpState.ESTABLISHED)
    assert client_end.local == server_end.remote
    assert client_end.remote == server_end.local == Address("127.0.0.1", port)


def test_client_half_close_leaves_client_fin_wait2_and_server_close_wait(
    observer: Observer, sockets: list[socket.socket]
) -> None:
    client, server, port = connected_pair(sockets)
    client.shutdown(socket.SHUT_WR)
    client_end = wait_for_state(
        observer, port, addr(client), addr(client, peer=True), TcpState.FIN_WAIT2
    )
    server_end = wait_for_state(
        observer, port, addr(server), addr(server, peer=True), TcpState.CLOSE_WAIT
    )
    assert client_end is not None
    assert client_end.state is TcpState.FIN_WAIT2
    assert server_end is not None
    assert server_end.state is TcpState.CLOSE_WAIT


def test_active_close_leaves_the_closer_in_time_wait(
    observer: Observer, sockets: list[socket.socket]
) -> None:
    client, server, port = connected_pair(sockets)
    local, remote = addr(client), addr(client, peer=True)
    server_local, server_remote = addr(server), addr(server, peer=True)
    client.close()  # the active close: FIN first
    assert wait_for_state(observer, port, server_local, server_remote, TcpState.CLOSE_WAIT)
    server.close()  # passive side: LAST_ACK, then gone
    record = wait_for_state(observer, port, local, remote, TcpState.TIME_WAIT)
    assert record is not None
    assert record.state is TcpState.TIME_WAIT
    gone = wait_for(lambda: find(observer, port, server_local, server_remote), lambda r: r is None)
    assert gone is None
    if observer.name == "ss":
        assert record.timer is not None
        assert record.timer.name == "timewait"
        assert 0 < record.timer.remaining <= 60
    else:
        assert record.pid is None  # no process owns a TIME_WAIT socket


def test_backend_reports_only_sockets_on_the_asked_ports(
    observer: Observer, sockets: list[socket.socket]
) -> None:
    _, asked = listen(sockets)
    _, other = listen(sockets)
    records = wait_for(lambda: observer.snapshot([asked]), lambda found: len(found) >= 1)
    assert [(r.local, r.state) for r in records] == [
        (Address("127.0.0.1", asked), TcpState.LISTEN)
    ]
    assert all(other not in (r.local.port, r.remote and r.remote.port) for r in records)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_backend_reports_ipv6_loopback_and_v4_mapped_ends_normalised(
    observer: Observer, sockets: list[socket.socket]
) -> None:
    client6, server6, port6 = connected_pair(sockets, "::1", "::1")
    end6 = wait_for_state(
        observer, port6, Address("::1", port6), addr(server6, peer=True), TcpState.ESTABLISHED
    )
    assert end6 is not None
    assert end6.remote == Address("::1", addr(client6).port)
    # An IPv4 client on a dual-stack listener: the server end is [::ffff:127.0.0.1] in the
    # kernel, and every backend reports it as plain 127.0.0.1, like the client's own view.
    client4, _, port4 = connected_pair(sockets, "127.0.0.1", "::")
    mapped = wait_for_state(
        observer, port4, Address("127.0.0.1", port4), addr(client4), TcpState.ESTABLISHED
    )
    assert mapped is not None
    assert mapped.local == Address("127.0.0.1", port4)
    # ...and says it was spelled ::ffff: (ss, psutil and netlink alike), which the views print;
    # the client's own end, an IPv4 socket, is not.
    assert mapped.local.mapped
    assert mapped.remote is not None
    assert mapped.remote.mapped
    assert mapped.local.shown == f"[::ffff:127.0.0.1]:{port4}"
    own = wait_for_state(
        observer, port4, addr(client4), Address("127.0.0.1", port4), TcpState.ESTABLISHED
    )
    assert own is not None
    assert not own.local.mapped
    listener = wait_for_state(observer, port4, Address("::", port4), None, TcpState.LISTEN)
    assert listener is not None


def test_psutil_knows_which_process_owns_an_established_socket(
    sockets: list[socket.socket],
) -> None:
    client, _, port = connected_pair(sockets)
    record = wait_for_state(
        PsutilObserver(), port, addr(client), addr(client, peer=True), TcpState.ESTABLISHED
    )
    assert record is not None
    assert record.pid == os.getpid()


def test_ss_and_psutil_agree_on_a_half_closed_connection(sockets: list[socket.socket]) -> None:
    client, server, port = connected_pair(sockets)
    client.shutdown(socket.SHUT_WR)
    backends: list[Observer] = [SsObserver(), PsutilObserver()]

    def read() -> tuple[Reconciled, Reconciled]:
        snapshots = {backend.name: backend.snapshot([port]) for backend in backends}
        return (
            reconcile(snapshots, addr(client), addr(client, peer=True)),
            reconcile(snapshots, addr(server), addr(server, peer=True)),
        )

    def settled(views: tuple[Reconciled, Reconciled]) -> bool:
        client_view, server_view = views
        return (
            client_view.state is TcpState.FIN_WAIT2
            and server_view.state is TcpState.CLOSE_WAIT
            and client_view.agree
            and server_view.agree
        )

    views = wait_for(read, settled)
    assert settled(views), views
    client_view, server_view = views
    assert list(client_view.sources) == ["ss", "psutil"]
    assert client_view.note is None
    assert client_view.pid == server_view.pid == os.getpid()
