"""Shared fixtures and markers.

Tests marked ``root`` need real root (network namespaces, nftables, tracefs). They run in CI,
which is root, and skip elsewhere with the reason stated.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

import pytest

from tests import needs

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(
        reason="needs real root (netns/nftables/tracefs); CI runs these as root"
    )
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    """Every async behaviour is checked on both event loops."""
    name: str = request.param
    return name


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test registers here are reset (RST, no TIME_WAIT) if it left them open."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        if sock.fileno() != -1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


@pytest.fixture(autouse=True)
def _root_tests_need_ip_and_nft(request: pytest.FixtureRequest) -> None:
    """Tests marked ``root`` build namespaces (ip) and most hold segments (nft): on a machine
    without them they skip with the package to install (under CI=true they fail), instead
    of failing one by one with "nft not found" (issue 14: 121 such failures on a bare
    machine)."""
    if "root" in request.keywords:
        needs.tool("ip")
        needs.tool("nft")
