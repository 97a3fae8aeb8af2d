"""``close_at_once``: two streams closed by one system call (net.endpoints).

The simultaneous-close lab shows what it is for (tests/netns/test_held_labs.py); these pin
that it closes what it was given, both ends, and nothing else, and leaves no descriptor.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from handshake_lab.net.endpoints import Stream, adjacent_dups, close_at_once
from handshake_lab.net.loops import loop_factory


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_duplicates_land_on_consecutive_free_numbers_and_skip_taken_ones() -> None:
    a, b = socket.socketpair()
    # A run of three descriptors with a hole in the middle: a run of two does not fit there.
    x, y, z = os.dup(0), os.dup(0), os.dup(0)
    os.close(y)
    try:
        first = adjacent_dups([a.fileno(), b.fileno()])
        try:
            assert inode(first) == inode(a.fileno())
            assert inode(first + 1) == inode(b.fileno())
            assert y != first + 1  # y alone is free: a run of two cannot start there
            assert inode(x) == inode(z) == inode(0)  # nothing else was touched
        finally:
            os.closerange(first, first + 2)
    finally:
        os.close(x)
        os.close(z)
        a.close()
        b.close()


async def _both_ends_closed_by_one_call() -> tuple[set[int], set[int], bytes, list[str]]:
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = Stream(reader, writer)
        stream.start()
        await accepted.put(stream)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, reuse_address=False)
    port = server.sockets[0].getsockname()[1]
    by_reader, by_writer = await asyncio.open_connection("127.0.0.1", port)  # must stay open
    bystander = await asyncio.wait_for(accepted.get(), 2.0)
    ends = []
    for _ in range(2):  # two connections; one end of each is closed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = Stream(reader, writer)
        client.start()
        ends.append((client, await asyncio.wait_for(accepted.get(), 2.0)))
    before = open_fds()
    await close_at_once((ends[0][0], ends[1][1]), 2.0)
    after = open_fds()
    # The other end of each closed stream reads EOF: the kernel closed both sockets.
    survivors = (ends[0][1], ends[1][0])
    eofs = [(await s.read_all(2.0))[0] for s in survivors]
    assert await bystander.send(b"still here") == "ok"
    got = await asyncio.wait_for(by_reader.readexactly(10), 2.0)
    for stream in (*survivors, bystander):
        await stream.abort()
    by_writer.close()
    server.close()
    await server.wait_closed()
    return before, after, got, eofs


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_both_streams_close_and_no_descriptor_is_left(loop_name: str) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        before, after, got, eofs = runner.run(_both_ends_closed_by_one_call())
    assert len(before - after) == 2  # the two streams' own descriptors (and no duplicate)
    assert not after - before
    assert eofs == ["EOF", "EOF"]
    assert got == b"still here"  # a connection not given to it is untouched
