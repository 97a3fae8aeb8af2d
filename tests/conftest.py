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


# The tool speaks the locale's language (i18n.lang.from_locale). The tests assert English unless
# they ask for --lang zh, so they run in an English locale whatever the user's is: a student's
# zh_CN.UTF-8 must not fail `make test`. Set at import, in the main process and in every xdist
# worker, before any test spawns the CLI; tests of the locale rule pass their own environment.
for _var in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
    os.environ.pop(_var, None)
os.environ["LANG"] = "C.UTF-8"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _share_module_setup(items)
    if IS_ROOT:
        return
    skip = pytest.mark.skip(
        reason="needs real root (netns/nftables/tracefs); CI runs these as root"
    )
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def _share_module_setup(items: list[pytest.Item]) -> None:
    """``make test`` runs the suite on several pytest-xdist workers (``--dist loadgroup``):
    the tests of a module that shares an expensive module-scoped fixture (a debootstrap, a lab
    run per language, a browser) go to one worker, so the set-up is made once, not once per
    worker. Every other test is spread over the workers as they come free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope == "module" for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


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
