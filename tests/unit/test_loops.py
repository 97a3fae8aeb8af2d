"""The loop is configuration: a factory per name; a missing uvloop is a clear error."""

from __future__ import annotations

import asyncio
import sys

import pytest

from handshake_lab.errors import ExitStatus, MissingDependencyError
from handshake_lab.net.loops import LOOP_NAMES, loop_factory


def test_asyncio_factory_makes_a_plain_asyncio_loop() -> None:
    loop = loop_factory("asyncio")()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_uvloop_factory_makes_a_uvloop_loop() -> None:
    loop = loop_factory("uvloop")()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_missing_uvloop_is_a_missing_dependency_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install uvloop") as info:
        loop_factory("uvloop")
    assert info.value.exit_status is ExitStatus.MISSING_DEPENDENCY


def test_no_global_policy_is_installed() -> None:
    for name in LOOP_NAMES:
        loop_factory(name)
    assert type(asyncio.get_event_loop_policy()).__module__.startswith("asyncio")
