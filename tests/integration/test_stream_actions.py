"""The stream actions the corner-case labs need, on real loopback sockets, on both loops.

A lab passing shows the states; these pin what the labs cannot see: a lingering close blocks a
worker thread, not the event loop (the runner must go on reading the kernel), and stop_reading
really leaves the bytes in the kernel (recv_q) so that close() turns into a RST.
"""

from __future__ import annotations

import asyncio
import socket
import time

from handshake_lab.net.endpoints import Stream
from handshake_lab.net.loops import loop_factory


async def _pair() -> tuple[Stream, Stream, asyncio.Server]:
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = Stream(reader, writer)
        stream.start()
        await accepted.put(stream)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, reuse_address=False)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Stream(reader, writer)
    client.start()
    peer = await asyncio.wait_for(accepted.get(), 2.0)
    return client, peer, server


async def _lingering_close_keeps_the_loop_running() -> tuple[int, int, str, int, int]:
    client, peer, server = await _pair()
    assert peer.stop_reading() == "ok"
    outcome, facts = await client.fill(2.0)
    assert outcome == "ok"
    sent = facts["sent"]
    assert client.set_linger(1) == "ok"
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    outcome, facts = await client.close_lingering()
    task.cancel()
    # The orphan delivers everything once the peer reads: its data, then its FIN.
    read_outcome, read = await peer.read_all(5.0)
    await peer.abort()
    server.close()
    assert outcome == "ok"
    return facts["close_ms"], ticks, read_outcome, read, sent


async def _fill_against_a_slow_reader() -> tuple[int, int, int]:
    """A peer that reads 16 KB every 20 ms for 0.4 s, then stops: fill must go on writing
    while room keeps appearing, and return only once nothing drains (send_q before and 0.6 s
    after it returned, and the bytes written)."""
    stop = asyncio.Event()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.4
        while loop.time() < until:
            await reader.read(16384)
            await asyncio.sleep(0.02)
        await stop.wait()
        writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Stream(reader, writer)
    client.start()
    outcome, facts = await client.fill(5.0)
    assert outcome == "ok", facts
    sock = writer.get_extra_info("socket")
    before = _outq(sock.fileno())
    await asyncio.sleep(0.6)
    after = _outq(sock.fileno())
    stop.set()
    await client.abort()
    server.close()
    return before, after, facts["sent"]


def _outq(fd: int) -> int:
    import fcntl  # noqa: PLC0415
    import struct  # noqa: PLC0415
    import termios  # noqa: PLC0415

    raw = fcntl.ioctl(fd, termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def test_fill_returns_only_once_the_peers_window_stays_shut(loop_name: str) -> None:
    # One write-until-EAGAIN returned while the peer still took data: the bytes then drained
    # after fill had said "the rest waits in the send queue" (linger across two VMs).
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        before, after, sent = runner.run(_fill_against_a_slow_reader())
    assert before > 0
    assert after == before, (before, after, sent)


def test_a_lingering_close_blocks_a_thread_not_the_loop(loop_name: str) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        close_ms, ticks, read_outcome, read, sent = runner.run(
            _lingering_close_keeps_the_loop_running()
        )
    assert 900 <= close_ms <= 1600
    # ~20 ticks of 50 ms fit into the 1 s close; a loop blocked in close() would get none.
    assert ticks >= 10
    # Nothing was thrown away when the linger time ran out: every byte, then EOF.
    assert sent > 0
    assert read == sent
    assert read_outcome == "EOF"


async def _unread_then_close() -> tuple[int, str]:
    client, peer, server = await _pair()
    assert peer.stop_reading() == "ok"
    assert await client.send(b"twelve bytes") == "ok"
    deadline = time.monotonic() + 2.0
    facts: dict[str, int] = {}
    while time.monotonic() < deadline:
        outcome, facts = peer.queues()
        assert outcome == "ok"
        if facts["recv_q"] == 12:
            break
        await asyncio.sleep(0.005)
    assert await peer.close() == "ok"
    outcome, _ = await client.wait_input(2.0)
    await client.abort()
    server.close()
    return facts["recv_q"], outcome


def test_stop_reading_leaves_the_bytes_in_the_kernel_and_close_resets(loop_name: str) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        recv_q, outcome = runner.run(_unread_then_close())
    assert recv_q == 12
    assert outcome == "ECONNRESET"


def test_keepalive_and_user_timeout_are_set_on_the_socket(loop_name: str) -> None:
    async def check() -> tuple[int, int, int, int, int]:
        client, peer, server = await _pair()
        assert client.set_keepalive(7, 3, 4) == "ok"
        assert client.set_user_timeout(1500) == "ok"
        sock = client.sock
        assert sock is not None
        values = (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )
        await client.abort()
        await peer.abort()
        server.close()
        return values

    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        assert runner.run(check()) == (1, 7, 3, 4, 1500)
