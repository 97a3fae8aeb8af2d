"""``play --topology netns`` without root takes the same user-namespace rerun as ``run``: the
holds work there, and a session saved there re-runs agreeing. As root (CI) the rerun is forced
with ``HANDSHAKE_LAB_USERNS=1``; it skips only where the kernel refuses user namespaces."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from handshake_lab.topo.caps import user_namespaces_work
from tests import needs
from tests.integration.test_cli import CLI
from tests.integration.test_userns_cli import userns_env


@pytest.fixture(autouse=True, scope="module")
def _needs_userns_and_nft() -> None:
    works, detail = user_namespaces_work()
    needs.require(works, f"no unprivileged user namespaces here: {detail}")
    needs.tool("nft")


def test_play_in_a_user_namespace_holds_a_fin_and_saves_a_lab_that_reruns(
    tmp_path: Path, loop_name: str
) -> None:
    saved = tmp_path / "userns-fin.toml"
    script = f"connect\ndrop next fin from client\nshutdown client\nwait 1\nsave {saved}\n"
    done = subprocess.run(
        [*CLI, "play", "--topology", "netns", "--loop", loop_name],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        env=userns_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "running in a private user namespace" in done.stderr
    assert "DROPPED by hold h1" in done.stdout
    assert "hold h1 (drop_fin at server): nft counter 1 dropped" in done.stdout
    assert f"play: saved 5 steps to {saved}" in done.stdout
    again = subprocess.run(
        [*CLI, "run", str(saved), "--loop", loop_name],
        capture_output=True,
        text=True,
        timeout=120,
        env=userns_env(),
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert "PASSED: the kernel agreed with every step (5/5)" in again.stdout
