"""``watch.delta`` on replies recorded from the real kernel: both paths, the same bytes.

Loopback sockets on an ephemeral port go through a connection's life (listen, a queued
connection accepted later, data, active and passive close, TIME_WAIT); after each step the
port's sock_diag dump is recorded as the kernel sent it. The recorded replies are then
played through the plain tracker (every record decoded) and the delta tracker (only what
changed), and both must report the same transitions and show the same sockets. Real replies
carry what hand-built ones do not: the attributes the kernel adds after each message, and the
shorter TIME_WAIT messages.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import cast

from handshake_lab.observe.netlink import NetlinkObserver, diag_socket, parse_marks, parse_messages
from handshake_lab.tcp.states import TcpState
from handshake_lab.watch import ProcOwners, Watcher
from handshake_lab.watch.delta import DeltaTracker
from handshake_lab.watch.tracker import Tracker, WatchFilter
from tests.netlink_replies import ReplaySocket


def replaying(replies: list[bytes]) -> Callable[[], socket.socket]:
    replay = ReplaySocket(replies, chunk=600)  # a few datagrams per reply
    return lambda: cast(socket.socket, replay)


class Recorder:
    """A real NETLINK_SOCK_DIAG socket that keeps every reply it receives."""

    def __init__(self) -> None:
        self.sock = diag_socket()
        self.replies: list[bytearray] = []

    def send(self, data: bytes) -> int:
        self.replies.append(bytearray())
        return self.sock.send(data)

    def recv_into(self, buffer: bytearray) -> int:
        size = self.sock.recv_into(buffer)
        self.replies[-1] += buffer[:size]
        return size

    def settimeout(self, timeout: float) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


def record_a_connection_life(sockets: list[socket.socket]) -> tuple[int, list[bytes]]:
    recorder = Recorder()
    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, recorder))
    listener = socket.socket()
    sockets.append(listener)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port: int = listener.getsockname()[1]
    steps: list[Callable[[], object]] = []
    client, queued = socket.socket(), socket.socket()
    sockets += [client, queued]
    accepted: list[socket.socket] = []

    def accept() -> None:
        server, _ = listener.accept()
        sockets.append(server)
        accepted.append(server)

    def read_and_close() -> None:
        accepted[0].recv(4096)  # unread data would make close() send a reset
        accepted[0].close()

    steps = [
        lambda: None,
        lambda: client.connect(("127.0.0.1", port)),
        accept,  # the server end gets an inode (and an owner) in the same state
        lambda: queued.connect(("127.0.0.1", port)),  # stays in the accept queue
        lambda: client.sendall(b"x" * 1000),
        lambda: client.shutdown(socket.SHUT_WR),  # FIN_WAIT2 and CLOSE_WAIT
        read_and_close,  # LAST_ACK, then TIME_WAIT on the client end
        accept,  # the queued one now
        queued.close,
        lambda: None,
    ]
    try:
        for step in steps:
            step()
            time.sleep(0.02)
            observer.dump([port])
    finally:
        observer.close()
    return port, [bytes(reply) for reply in recorder.replies]


def test_recorded_kernel_replies_give_the_same_watch_on_both_paths(
    sockets: list[socket.socket],
) -> None:
    port, replies = record_a_connection_life(sockets)
    clock = [0.0]
    slow, fast = Tracker(WatchFilter()), DeltaTracker(WatchFilter())
    slow_owners = ProcOwners(os.getpid(), clock=lambda: clock[0])
    fast_owners = ProcOwners(os.getpid(), clock=lambda: clock[0])
    seen: set[TcpState] = set()
    for reply in replies:
        clock[0] += 0.5
        expected = slow.update(parse_messages(reply), clock[0], slow_owners.owner)
        got = fast.apply(fast.compare(parse_marks(reply)), clock[0], fast_owners.owner)
        assert got == expected
        assert [(e.record, e.state, e.pid) for e in fast.sockets()] == [
            (e.record, e.state, e.pid) for e in slow.sockets()
        ]
        assert fast.counts() == slow.counts()
        seen |= set(slow.counts())
    assert {TcpState.LISTEN, TcpState.ESTABLISHED, TcpState.TIME_WAIT} <= seen
    assert any(entry.pid == os.getpid() for entry in slow.sockets())

    # The whole watcher, reading the same replies through its netlink observer.
    refreshes = []
    for delta in (True, False):
        observer = NetlinkObserver(socket_factory=replaying(replies))
        watcher = Watcher(
            WatchFilter(ports=frozenset({port})),
            observer,
            owners=ProcOwners(os.getpid(), clock=lambda: 1.0),
            clock=lambda: 1.0,
            wall=lambda: 1.0,
            delta=delta,
        )
        refreshes.append([watcher.refresh().transitions for _ in replies])
    assert refreshes[0] == refreshes[1]
