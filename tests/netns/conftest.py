"""Fixtures for the netns tests: a fresh pair per test, torn down whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handshake_lab.topo.pair import NetnsPair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[NetnsPair]:
    """A server/client pair whose registry lives in the test's tmp dir."""
    with NetnsPair(registry_dir=tmp_path / "registry") as made:
        yield made
