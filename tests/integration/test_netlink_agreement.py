"""The netlink observer against ss and psutil on the same real loopback sockets.

Every test builds its own sockets on ephemeral ports and compares the three backends on
exactly those ports: states, 4-tuples, and the TIME_WAIT timer against ss's. Sockets left open
are reset (SO_LINGER 0) so no test leaves a TIME_WAIT it did not ask for. Waits are bounded
polls.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from handshake_lab.errors import NetworkError, ObserverError
from handshake_lab.observe.base import Address, Observer, SocketRecord
from handshake_lab.observe.netlink import (
    Decoder,
    NetlinkObserver,
    NetlinkRecord,
    diag_socket,
    dump_request,
    port_filter_bytecode,
    socket_in_netns,
    state_mask,
)
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.tcp.states import TcpState

T = TypeVar("T")
Seen = frozenset[tuple[Address, Address | None, TcpState]]


@pytest.fixture
def netlink() -> Iterator[NetlinkObserver]:
    with NetlinkObserver() as observer:
        yield observer


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 3.0) -> T:
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.01)
        value = read()
    return value


def addr(sock: socket.socket, *, peer: bool = False) -> Address:
    host, port = (sock.getpeername() if peer else sock.getsockname())[:2]
    return Address(host, port)


def listen(sockets: list[socket.socket]) -> tuple[socket.socket, int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sockets.append(listener)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port: int = listener.getsockname()[1]
    return listener, port


def connect(
    sockets: list[socket.socket], listener: socket.socket, port: int
) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    server, _ = listener.accept()
    sockets += [client, server]
    return client, server


def seen(records: list[SocketRecord]) -> Seen:
    return frozenset((r.local, r.remote, r.state) for r in records)


def test_netlink_ss_and_psutil_agree_on_every_socket_and_the_time_wait_timer(
    sockets: list[socket.socket], netlink: NetlinkObserver
) -> None:
    listener, port = listen(sockets)
    _, other_port = listen(sockets)
    connect(sockets, listener, port)  # ESTABLISHED both ends
    half_client, _ = connect(sockets, listener, port)
    half_client.shutdown(socket.SHUT_WR)  # FIN_WAIT2 / CLOSE_WAIT
    closer, closed = connect(sockets, listener, port)
    tw_key = (addr(closer), addr(closer, peer=True))
    closer.close()  # active close: TIME_WAIT
    closed.close()
    ports = [port, other_port]
    backends: list[Observer] = [netlink, SsObserver(), PsutilObserver()]
    expected = sorted(
        ["CLOSE_WAIT", "ESTABLISHED", "ESTABLISHED", "FIN_WAIT2", "LISTEN", "LISTEN", "TIME_WAIT"]
    )

    def read() -> dict[str, list[SocketRecord]]:
        return {backend.name: backend.snapshot(ports) for backend in backends}

    def settled(views: dict[str, list[SocketRecord]]) -> bool:
        first = seen(views["netlink"])
        return (
            all(seen(records) == first for records in views.values())
            and sorted(state.name for _, _, state in first) == expected
        )

    views = wait_for(read, settled)
    assert settled(views), {name: sorted(seen(r)) for name, r in views.items()}
    by_source = {name: {r.key: r for r in records} for name, records in views.items()}
    tw_netlink, tw_ss = by_source["netlink"][tw_key], by_source["ss"][tw_key]
    assert tw_netlink.timer is not None
    assert tw_ss.timer is not None
    assert tw_netlink.timer.name == tw_ss.timer.name == "timewait"
    assert abs(tw_netlink.timer.remaining - tw_ss.timer.remaining) < 1.0
    assert 55 < tw_netlink.timer.remaining <= 60
    assert by_source["psutil"][tw_key].pid is None
    # queues agree with ss's Recv-Q / Send-Q (the listener's Send-Q is its backlog)
    for key, record in by_source["ss"].items():
        assert (by_source["netlink"][key].recv_q, by_source["netlink"][key].send_q) == (
            record.recv_q,
            record.send_q,
        ), key


def test_sockets_we_own_carry_our_uid_and_an_inode(
    sockets: list[socket.socket], netlink: NetlinkObserver
) -> None:
    listener, port = listen(sockets)
    client, _ = connect(sockets, listener, port)
    record = netlink.lookup(addr(client), addr(client, peer=True))
    assert isinstance(record, NetlinkRecord)
    assert record.uid == os.geteuid()
    assert record.inode == os.fstat(client.fileno()).st_ino


@pytest.mark.parametrize("asked", [1, 2, 3])
def test_port_filter_returns_exactly_what_ss_filter_returns(
    sockets: list[socket.socket], netlink: NetlinkObserver, asked: int
) -> None:
    ports: list[int] = []
    ours: set[tuple[Address, Address | None]] = set()
    for _ in range(4):
        listener, port = listen(sockets)
        client, server = connect(sockets, listener, port)
        ports.append(port)
        if len(ports) <= asked:
            ours |= {(Address("127.0.0.1", port), None)}
            ours |= {(addr(end), addr(end, peer=True)) for end in (client, server)}
    chosen = ports[:asked]
    ss = SsObserver()
    views = wait_for(
        lambda: (seen(netlink.snapshot(chosen)), seen(ss.snapshot(chosen))),
        lambda pair: pair[0] == pair[1] and ours <= {(lo, re) for lo, re, _ in pair[0]},
    )
    assert views[0] == views[1]
    # ours, plus whatever else on this host happens to use the port (an old TIME_WAIT)
    assert ours <= {(local, remote) for local, remote, _ in views[0]}
    assert all(
        local.port in chosen or (remote is not None and remote.port in chosen)
        for local, remote, _ in views[0]
    )
    others = set(ports[asked:])
    assert not any(local.port in others for local, _, _ in views[0])


def test_port_filter_runs_in_the_kernel(
    sockets: list[socket.socket],
) -> None:
    """A raw dump with the bytecode (no user-space filtering at all) returns only our port."""
    listener, port = listen(sockets)
    connect(sockets, listener, port)
    listen(sockets)  # another port, must not appear
    with diag_socket() as sock:
        sock.settimeout(5)
        sock.send(dump_request(socket.AF_INET, state_mask(None), port_filter_bytecode([port]), 1))
        decoder = Decoder(1)
        buffer = bytearray(65536)
        while not decoder.done:
            decoder.feed(buffer, sock.recv_into(buffer))
    ends = {(r.local.port, r.remote.port if r.remote else None) for r in decoder.records}
    assert len(ends) == 3
    assert all(port in end for end in ends)


def test_state_filter_runs_with_the_port_filter(
    sockets: list[socket.socket], netlink: NetlinkObserver
) -> None:
    listener, port = listen(sockets)
    connect(sockets, listener, port)
    records = netlink.snapshot([port], states=[TcpState.LISTEN])
    assert [(r.local, r.state) for r in records] == [(Address("127.0.0.1", port), TcpState.LISTEN)]
    assert netlink.snapshot([port], states=[]) == []
    assert netlink.snapshot([]) == []


def test_lookup_finds_established_and_time_wait_and_none_for_a_closed_4_tuple(
    sockets: list[socket.socket], netlink: NetlinkObserver
) -> None:
    listener, port = listen(sockets)
    client, server = connect(sockets, listener, port)
    client_key, server_key = (
        (addr(client), addr(client, peer=True)),
        (addr(server), addr(server, peer=True)),
    )
    for key in (client_key, server_key):
        found = netlink.lookup(*key)
        assert found is not None
        assert (found.key, found.state) == (key, TcpState.ESTABLISHED)
    listening = netlink.lookup(Address("127.0.0.1", port), None)
    assert listening is not None
    assert listening.state is TcpState.LISTEN

    client.close()
    server.close()
    time_wait = wait_for(
        lambda: netlink.lookup(*client_key),
        lambda r: r is not None and r.state is TcpState.TIME_WAIT,
    )
    assert time_wait is not None
    assert time_wait.state is TcpState.TIME_WAIT
    assert time_wait.timer is not None
    assert time_wait.timer.name == "timewait"
    # The server end is gone. The kernel's lookup falls back to the listener on that port;
    # lookup() must not report the listener as the asked connection.
    assert wait_for(lambda: netlink.lookup(*server_key), lambda r: r is None) is None
    assert netlink.lookup(Address("127.0.0.1", port), Address("127.0.0.1", 9)) is None
    # A listener is found only at the address it is bound to.
    assert netlink.lookup(Address("0.0.0.0", port), None) is None


def test_lookup_finds_ipv6_and_v4_mapped_sockets(
    sockets: list[socket.socket], netlink: NetlinkObserver
) -> None:
    try:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("no IPv6")
    sockets.append(listener)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        listener.bind(("::", 0))
    except OSError:
        pytest.skip("no IPv6 any-address")
    listener.listen(4)
    port = listener.getsockname()[1]
    client4 = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    server4, _ = listener.accept()
    sockets += [client4, server4]
    mapped = netlink.lookup(Address("127.0.0.1", port), addr(client4))
    assert mapped is not None
    assert mapped.state is TcpState.ESTABLISHED
    assert netlink.lookup(Address("::", port), None) is not None
    try:
        client6 = socket.create_connection(("::1", port), timeout=2.0)
    except OSError as exc:  # said, not passed: the IPv6 half below did not run
        pytest.skip(f"no ::1 on this machine ({exc}): IPv4-mapped half checked, IPv6 not")
    server6, _ = listener.accept()
    sockets += [client6, server6]
    found = netlink.lookup(addr(client6), Address("::1", port))
    assert found is not None
    assert found.remote == Address("::1", port)


def test_a_missing_network_namespace_is_an_observer_error() -> None:
    observer = NetlinkObserver(netns="hslab-does-not-exist")
    with pytest.raises(ObserverError, match="hslab-does-not-exist"):
        observer.snapshot()


def test_a_socket_factory_decides_where_the_socket_reads() -> None:
    made: list[socket.socket] = []

    def factory() -> socket.socket:
        sock = diag_socket()
        made.append(sock)
        return sock

    with NetlinkObserver(socket_factory=factory) as observer:
        observer.snapshot()
        observer.snapshot()
    assert len(made) == 1
    assert made[0].fileno() == -1  # closed with the observer


@pytest.mark.root
def test_netns_observer_sees_only_that_namespace() -> None:
    name = f"hslab-t-netlink-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        inside = socket_in_netns(name, lambda: socket.socket(socket.AF_INET))
        with inside:
            inside.bind(("127.0.0.1", 0))
            inside.listen(1)
            port = inside.getsockname()[1]
            with NetlinkObserver(netns=name) as observer:
                records = observer.snapshot()
                assert [(r.local, r.state) for r in records] == [
                    (Address("127.0.0.1", port), TcpState.LISTEN)
                ]
            here = NetlinkObserver()
            with here:
                assert here.lookup(Address("127.0.0.1", port), None) is None
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_socket_in_netns_rejects_path_like_names() -> None:
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(ValueError, match="bad network namespace"):
            socket_in_netns(bad)
    with pytest.raises(NetworkError, match="no network namespace named hslab-does-not-exist"):
        socket_in_netns("hslab-does-not-exist")
