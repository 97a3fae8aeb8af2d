"""A connection reset by its peer leaves no unretrieved error behind when we abort it.

asyncio keeps the error that ended a stream (ECONNRESET) in the protocol's close future and
prints "Future exception was never retrieved" with a traceback if a garbage-collection cycle
frees that future before the protocol. A soak caught it once after Ctrl-C; ``Stream.abort``
now retrieves it. The check reads asyncio's own flag for "nobody looked at this exception".
"""

from __future__ import annotations

import asyncio
import socket
import struct

from handshake_lab.net.endpoints import Stream
from handshake_lab.net.loops import loop_factory


async def _reset_then_abort() -> bool:
    server_streams: list[Stream] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = Stream(reader, writer)
        stream.start()
        server_streams.append(stream)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, reuse_address=False)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setblocking(False)
    await loop.sock_connect(client, ("127.0.0.1", port))
    for _ in range(200):
        if server_streams:
            break
        await asyncio.sleep(0.005)
    (stream,) = server_streams
    # The peer resets the connection: the server's transport ends with ECONNRESET.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    for _ in range(200):
        if stream.error is not None:
            break
        await asyncio.sleep(0.005)
    assert stream.error == "ECONNRESET"
    await stream.abort()
    closed = stream.writer._protocol._closed  # type: ignore[attr-defined]
    server.close()
    assert closed.done()
    return not closed._log_traceback  # True: its exception was retrieved


def test_abort_after_a_peer_reset_retrieves_the_stream_error(loop_name: str) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        assert runner.run(_reset_then_abort())
