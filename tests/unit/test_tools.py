"""System tools are looked up on PATH, then in the system directories a user's PATH lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab import tools
from handshake_lab.errors import ExitStatus, MissingDependencyError


def _tool(directory: Path, name: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_tool_missing_from_path_is_found_in_a_system_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sbin = tmp_path / "sbin"
    nft = _tool(sbin, "nft")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # a Debian user's PATH: no sbin
    monkeypatch.setenv(tools.DIRS_ENV, str(sbin))
    assert tools.find("nft") == str(nft)
    assert tools.require("nft") == str(nft)
    assert tools.command("nft") == str(nft)


def test_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _tool(tmp_path / "bin", "ss")
    _tool(tmp_path / "sbin", "ss")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv(tools.DIRS_ENV, str(tmp_path / "sbin"))
    assert tools.find("ss") == str(mine)


def test_a_really_missing_tool_names_its_package_and_exit_6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(tools.DIRS_ENV, "")
    assert tools.find("nft") is None
    assert tools.command("nft") == "nft"
    with pytest.raises(MissingDependencyError) as caught:
        tools.require("nft")
    assert "apt install nftables" in str(caught.value)
    assert caught.value.exit_status is ExitStatus.MISSING_DEPENDENCY
    assert "sysctl" in tools.PACKAGES
    assert tools.PACKAGES["sysctl"] == "procps"


def test_the_default_system_directories_include_sbin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tools.DIRS_ENV, raising=False)
    assert {"/usr/sbin", "/sbin"} <= set(tools.system_dirs())


def test_netns_runs_need_ip_and_nft_only_with_holds() -> None:
    assert tools.needed_for("loopback", holds=True) == []
    assert tools.needed_for("netns", holds=False) == ["ip"]
    assert tools.needed_for("netns", holds=True) == ["ip", "nft"]
