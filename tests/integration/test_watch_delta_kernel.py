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


TRANSIENT = {
    TcpState.SYN_SENT,
    TcpState.SYN_RECV,
    TcpState.FIN_WAIT1,
    TcpState.LAST_ACK,
    TcpState.CLOSING,
}


def settled(probe: NetlinkObserver, port: int, timeout: float = 10.0) -> None:
    """Wait until the sockets on ``port`` hold no passing state and two reads agree: what a
    step set in motion (a handshake, a FIN and its ACK) has finished. Replaces a fixed 20 ms
    sleep that a loaded machine could outrun; ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: list[tuple[str, str, TcpState]] | None = None
    while True:
        now = sorted((str(r.local), str(r.remote), r.state) for r in probe.snapshot([port]))
        if now == last and not any(state in TRANSIENT for _, _, state in now):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"port {port} not settled after {timeout:g} s: {now}")
        last = now
        time.sleep(0.002)  # the poll interval of a bounded wait, not a guess at a duration


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
    probe = NetlinkObserver()  # a second, real reader: when has the kernel settled?
    try:
        for step in steps:
            step()
            settled(probe, port)
            observer.dump([port])
    finally:
        observer.close()
        probe.close()
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
