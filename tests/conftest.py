"""Shared fixtures and markers.

Tests marked ``root`` need real root (network namespaces, nftables, tracefs). They run in CI,
which is root, and skip elsewhere with the reason stated.
"""

from __future__ import annotations

import os

import pytest

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
