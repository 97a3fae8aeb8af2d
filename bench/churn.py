"""Connection churn: connect, echo 4 bytes, close, as fast as a loop can, for a fixed time.

One echo server and ``CONCURRENCY`` client tasks share one event loop (asyncio or uvloop, from
``handshake_lab.net.loops``). The client closes first, so every finished connection leaves one
TIME_WAIT socket on the client side for 60 s; the count is read back over netlink afterwards,
filtered in the kernel by the server's port and the TIME_WAIT state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.tcp.states import TcpState

CONCURRENCY = 8
MESSAGE = b"ping"


@dataclass(frozen=True)
class Churn:
    loop: str
    seconds: float
    connections: int
    time_wait: int

    @property
    def per_second(self) -> float:
        return self.connections / self.seconds


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await reader.read(64)
        writer.write(data)
        await writer.drain()
        await reader.read(64)  # the client's FIN
    finally:
        writer.close()


async def _client(port: int, deadline: float) -> int:
    loop = asyncio.get_running_loop()
    done = 0
    while loop.time() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(MESSAGE)
        await writer.drain()
        await reader.readexactly(len(MESSAGE))
        writer.close()  # active close: TIME_WAIT stays on this side
        await writer.wait_closed()
        done += 1
    return done


async def _run(seconds: float) -> tuple[int, int, float]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, reuse_address=False)
    port: int = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with server:
        counts = await asyncio.gather(
            *(_client(port, start + seconds) for _ in range(CONCURRENCY))
        )
        elapsed = loop.time() - start
    return sum(counts), port, elapsed


def churn(loop_name: str, seconds: float) -> Churn:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        connections, port, elapsed = runner.run(_run(seconds))
    with NetlinkObserver() as observer:
        time_wait = len(observer.snapshot([port], states=[TcpState.TIME_WAIT]))
    return Churn(loop_name, elapsed, connections, time_wait)
