"""The transition stream on real loopback sockets (root: tracefs is root-only).

Each test binds its own ephemeral port and runs its own trace instance (``hslab-test-...``),
so tests and other runs on the host never see each other's events. Waits are bounded: the
follower's ``wait_for`` / ``flush`` block on a condition with a timeout, never a bare sleep.
Sockets still open at the end are closed with SO_LINGER 0 (RST, no TIME_WAIT).
"""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.observe.base import Address
from handshake_lab.observe.trace import (
    TRACEFS,
    TraceEvent,
    TraceFollower,
    durations,
    trace_capability,
)
from handshake_lab.tcp.states import TcpState as S

pytestmark = pytest.mark.root

TIMEOUT = 3.0


def run_id() -> str:
    return f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def bound(sockets: list[socket.socket], host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to an ephemeral port, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(sock)
    sock.bind((host, 0))
    return sock


def port_of(sock: socket.socket, *, peer: bool = False) -> int:
    port: int = (sock.getpeername() if peer else sock.getsockname())[1]
    return port


def moves(events: list[TraceEvent], local: int, remote: int) -> list[tuple[S | None, S | None]]:
    return [
        (e.old, e.new)
        for e in events
        if e.kind == "state" and e.local.port == local and e.ports[1] == remote
    ]


def expect(follower: TraceFollower, local: int, remote: int, old: S, new: S) -> TraceEvent:
    event = follower.wait_for(
        lambda e: (
            e.kind == "state" and e.ports == (local, remote) and (e.old, e.new) == (old, new)
        ),
        timeout=TIMEOUT,
    )
    assert event is not None, f"no {old.name} -> {new.name} on {local}->{remote}"
    return event


def test_capability_reports_ready_as_root() -> None:
    ok, reason = trace_capability()
    assert ok, reason


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_connect_and_close_shows_every_transition_of_both_sides(
    sockets: list[socket.socket], host: str
) -> None:
    listener = bound(sockets, host)
    server_port = port_of(listener)
    with TraceFollower([server_port], run_id()) as follower:
        listener.listen(8)
        expect(follower, server_port, 0, S.CLOSE, S.LISTEN)

        before = time.monotonic()
        client = socket.create_connection((host, server_port))
        sockets.append(client)
        server, _ = listener.accept()
        sockets.append(server)
        after = time.monotonic()
        client_port = port_of(client)
        connected = expect(follower, client_port, server_port, S.SYN_SENT, S.ESTABLISHED)
        accepted = expect(follower, server_port, client_port, S.SYN_RECV, S.ESTABLISHED)
        assert before <= connected.time <= after
        assert before <= accepted.time <= after

        client.close()  # the client is the active closer
        expect(follower, client_port, server_port, S.FIN_WAIT1, S.FIN_WAIT2)
        expect(follower, server_port, client_port, S.ESTABLISHED, S.CLOSE_WAIT)
        server.close()
        expect(follower, server_port, client_port, S.LAST_ACK, S.CLOSE)
        expect(follower, client_port, server_port, S.FIN_WAIT2, S.CLOSE)
        follower.flush()
        events = follower.drain()

    # connect() reports CLOSE -> SYN_SENT before it picks the port: sport=0, match by dport.
    unbound = [e for e in events if e.kind == "state" and e.local.port == 0]
    assert [(e.old, e.new, e.ports[1]) for e in unbound] == [(S.CLOSE, S.SYN_SENT, server_port)]
    assert before <= unbound[0].time <= connected.time
    assert moves(events, client_port, server_port) == [
        (S.SYN_SENT, S.ESTABLISHED),
        (S.ESTABLISHED, S.FIN_WAIT1),
        (S.FIN_WAIT1, S.FIN_WAIT2),
        (S.FIN_WAIT2, S.CLOSE),  # TIME_WAIT follows, but is never traced
    ]
    assert moves(events, server_port, client_port) == [
        (S.LISTEN, S.SYN_RECV),  # the child socket, created when the handshake completes
        (S.SYN_RECV, S.ESTABLISHED),
        (S.ESTABLISHED, S.CLOSE_WAIT),
        (S.CLOSE_WAIT, S.LAST_ACK),
        (S.LAST_ACK, S.CLOSE),
    ]
    assert {e.local.host for e in events} == {host}
    times = [e.time for e in events]
    assert times == sorted(times)

    spans = durations(events)
    client_states = [s.state for s in spans if s.local == Address(host, client_port)]
    assert client_states == [S.SYN_SENT, S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2]


def test_refused_connect_shows_the_reset_both_ways(sockets: list[socket.socket]) -> None:
    closed = bound(sockets)  # bound but never listening: connecting is refused
    port = port_of(closed)
    with TraceFollower([port], run_id()) as follower:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sent = follower.wait_for(lambda e: e.kind == "send_reset", timeout=TIMEOUT)
        received = follower.wait_for(lambda e: e.kind == "receive_reset", timeout=TIMEOUT)
    assert sent is not None
    assert received is not None
    assert sent.local.port == port
    assert sent.reason == "NO_SOCKET"
    assert sent.state is None
    assert received.remote == Address("127.0.0.1", port)


def test_unanswered_syn_is_reported_as_a_retransmit(sockets: list[socket.socket]) -> None:
    # listen(0) holds one connection in the accept queue; the next SYN is dropped and resent
    # after ~1 s (KERNEL-FACTS: "Holding states still").
    listener = bound(sockets)
    port = port_of(listener)
    listener.listen(0)
    filler = socket.create_connection(("127.0.0.1", port))
    sockets.append(filler)
    with TraceFollower([port], run_id()) as follower:
        waiting = socket.socket()
        sockets.append(waiting)
        waiting.setblocking(False)
        waiting.connect_ex(("127.0.0.1", port))
        retransmit = follower.wait_for(lambda e: e.kind == "retransmit", timeout=TIMEOUT)
    assert retransmit is not None
    assert retransmit.state is S.SYN_SENT
    assert retransmit.local.port == port_of(waiting)


def test_instance_is_removed_after_stop_even_when_the_body_raised() -> None:
    follower = TraceFollower([9], run_id())
    seen: list[str] = []

    def body() -> None:
        with follower:
            assert follower.path.is_dir()
            seen.append((follower.path / "trace_clock").read_text())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert "[mono]" in seen[0]
    assert not follower.path.exists()
    follower.stop()  # idempotent


def test_stop_is_idempotent_and_drain_still_returns_read_events(
    sockets: list[socket.socket],
) -> None:
    listener = bound(sockets)
    port = port_of(listener)
    follower = TraceFollower([port], run_id()).start()
    try:
        listener.listen(1)
        follower.flush()
    finally:
        follower.stop()
    follower.stop()
    assert not follower.path.exists()
    assert [(e.old, e.new) for e in follower.drain()] == [(S.CLOSE, S.LISTEN)]


def test_two_followers_at_once_each_see_only_their_own_port(
    sockets: list[socket.socket],
) -> None:
    first, second = bound(sockets), bound(sockets)
    with (
        TraceFollower([port_of(first)], run_id()) as one,
        TraceFollower([port_of(second)], run_id()) as two,
    ):
        assert one.path != two.path
        for listener in (first, second):
            listener.listen(4)
            client = socket.create_connection(("127.0.0.1", port_of(listener)))
            sockets.append(client)
            server, _ = listener.accept()
            sockets.append(server)
        one.flush()
        two.flush()
        seen_one, seen_two = one.drain(), two.drain()
    assert seen_one
    assert seen_two
    assert all(port_of(first) in e.ports for e in seen_one)
    assert all(port_of(second) in e.ports for e in seen_two)
    assert not any(port_of(second) in e.ports for e in seen_one)


def test_the_top_level_trace_settings_are_never_touched(
    sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file the follower writes, creates or removes in tracefs is inside its own
    instance. Recorded as it happens, rather than by diffing the global settings before and
    after: another tracer on a shared machine may change those meanwhile, and that says
    nothing about this follower."""
    touched: list[Path] = []
    real_write, real_mkdir, real_rmdir = Path.write_text, Path.mkdir, Path.rmdir
    real_open = os.open

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        touched.append(self)
        return real_write(self, *args, **kwargs)

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        touched.append(self)
        real_mkdir(self, *args, **kwargs)

    def rmdir(self: Path) -> None:
        touched.append(self)
        real_rmdir(self)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            touched.append(Path(os.fsdecode(path)))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "rmdir", rmdir)
    monkeypatch.setattr(os, "open", open_)
    listener = bound(sockets)
    with TraceFollower([port_of(listener)], run_id()) as follower:
        listener.listen(1)
        client = socket.create_connection(("127.0.0.1", port_of(listener)))
        sockets.append(client)
        follower.flush()
        own = follower.path
    monkeypatch.undo()
    in_tracefs = [p for p in touched if str(p).startswith(str(TRACEFS))]
    assert in_tracefs, "the follower wrote nothing: it cannot have set up its instance"
    assert any(p.name == "enable" for p in in_tracefs)
    outside = [p for p in in_tracefs if p != own and own not in p.parents]
    assert outside == [], f"written outside its instance {own}: {outside}"


def test_a_busy_port_loses_no_events(sockets: list[socket.socket]) -> None:
    listener = bound(sockets)
    port = port_of(listener)
    listener.listen(64)
    rounds = 200
    with TraceFollower([port], run_id()) as follower:
        for _ in range(rounds):
            client = socket.create_connection(("127.0.0.1", port))
            server, _ = listener.accept()
            # RST close: no TIME_WAIT piles up on the host.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            server.close()
        follower.flush(timeout=10.0)
        events = follower.drain()
    assert follower.lost_events == 0
    state_events = [e for e in events if e.kind == "state"]
    # Per round at least: CLOSE->SYN_SENT, SYN_SENT->ESTABLISHED, LISTEN->SYN_RECV,
    # SYN_RECV->ESTABLISHED, client ->CLOSE, server ->CLOSE.
    assert len(state_events) >= 6 * rounds


def test_no_hslab_instance_is_left_behind() -> None:
    instances = Path(TRACEFS / "instances")
    leftovers = [p.name for p in instances.iterdir() if p.name.startswith("hslab-test-")]
    assert [name for name in leftovers if name.split("-")[2] == str(os.getpid())] == []
