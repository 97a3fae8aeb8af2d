"""``bind_quiet_port``: the port a client that will reconnect starts from (net.endpoints).

The netns test (tests/netns/test_reconnect_port.py) shows why it matters; these pin how the
port is chosen, on loopback, for any user.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import Iterator

import pytest

from handshake_lab.net import endpoints
from handshake_lab.net.endpoints import Client, bind_quiet_port, ephemeral_range


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def quiet(sockets: list[socket.socket]) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sockets.append(sock)
    bind_quiet_port(sock)
    return sock, int(sock.getsockname()[1])


def test_a_quiet_port_lies_outside_the_range_the_kernel_hands_out(
    sockets: list[socket.socket],
) -> None:
    low, high = ephemeral_range()
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
        assert f.read().split() == [str(low), str(high)]
    ports = {quiet(sockets)[1] for _ in range(20)}
    assert len(ports) == 20  # each one bound, so each one different
    assert all(1024 <= p < low or high < p <= 65535 for p in ports), ports


def test_a_taken_port_is_passed_over(
    sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, taken = quiet(sockets)
    spare, free = quiet(sockets)
    spare.close()  # free again: the second candidate
    monkeypatch.setattr(random, "sample", lambda pool, k: [taken, free])
    _, got = quiet(sockets)
    assert got == free


def test_no_port_outside_the_range_is_an_outcome_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoints, "ephemeral_range", lambda: (1024, 65535))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError, match="outside ip_local_port_range") as raised:
        bind_quiet_port(sock)
    sock.close()
    assert raised.value.errno == errno.EADDRNOTAVAIL

    async def connect() -> str:
        client = Client("client", "127.0.0.1")
        return await client.connect(9, wait=True, timeout=1.0, quiet_port=True)

    assert asyncio.run(connect()) == "EADDRNOTAVAIL"  # refused before any SYN was sent
