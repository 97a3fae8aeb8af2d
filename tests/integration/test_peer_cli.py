"""run --peer as a student on the client machine uses it: a real agent process, a real token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handshake_lab.agent.protocol import decode_ready
from handshake_lab.agent.token import generate_token, write_token_file
from handshake_lab.errors import ExitStatus, UsageError
from handshake_lab.observe.defaults import default_observers
from handshake_lab.placement import Topology
from handshake_lab.placement.place import peer_refusal, place
from handshake_lab.spec.loader import builtin_dir, load_lab
from tests.schema_check import check_run_output

CLI = [sys.executable, "-m", "handshake_lab"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``handshake-lab agent`` on 127.0.0.1, a free port; yields (peer, token file)."""
    token_file = tmp_path / "agent.token"
    write_token_file(token_file, generate_token())
    env = {k: v for k, v in os.environ.items() if k != "HSLAB_AGENT_TOKEN"}
    with subprocess.Popen(
        [*CLI, "agent", "--bind", "127.0.0.1", "--port", "0", "--token-file", str(token_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            host, port = decode_ready(line)
            assert host == "127.0.0.1", line
            yield f"127.0.0.1:{port}", token_file
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "HSLAB_AGENT_TOKEN"}
    proc = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
        check=False,
    )
    check_run_output(args, proc.stdout)
    return proc


def test_a_lab_runs_with_its_server_side_at_the_agent(agent: tuple[str, Path]) -> None:
    peer, token_file = agent
    proc = run("run", "reset", "--peer", peer, "--token-file", str(token_file), "--json")
    assert proc.returncode == ExitStatus.OK, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["topology"] == "remote"
    steps = {e["id"]: e for e in events if e["event"] == "step"}
    assert steps["server-sees-reset"]["outcome"] == "ECONNRESET"
    assert events[-1]["passed"] is True


def test_the_token_may_come_from_the_environment(agent: tuple[str, Path]) -> None:
    peer, token_file = agent
    token = token_file.read_text().strip()
    proc = run("run", "close-wait-leak", "--peer", peer, env={"HSLAB_AGENT_TOKEN": token})
    assert proc.returncode == ExitStatus.OK, proc.stderr


def test_a_wrong_token_is_one_line_and_a_network_error(agent: tuple[str, Path]) -> None:
    peer, _ = agent
    proc = run("run", "reset", "--peer", peer, env={"HSLAB_AGENT_TOKEN": "x" * 64})
    assert proc.returncode == ExitStatus.NETWORK_ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "token" in lines[0]


def test_no_token_says_where_to_put_it(agent: tuple[str, Path]) -> None:
    peer, _ = agent
    proc = run("run", "reset", "--peer", peer)
    assert proc.returncode == ExitStatus.NETWORK_ERROR
    assert "HSLAB_AGENT_TOKEN" in proc.stderr


def test_peer_and_topology_exclude_each_other() -> None:
    proc = run("run", "reset", "--peer", "127.0.0.1:1", "--topology", "netns")
    assert proc.returncode == ExitStatus.USAGE
    assert "exclude" in proc.stderr


def test_an_agent_that_is_not_there_is_a_network_error(tmp_path: Path) -> None:
    token_file = tmp_path / "t"
    write_token_file(token_file, generate_token())
    proc = run("run", "reset", "--peer", "127.0.0.1:1", "--token-file", str(token_file))
    assert proc.returncode == ExitStatus.NETWORK_ERROR
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("lab", ["syn-flood", "dual-stack"])
def test_labs_that_cannot_run_across_the_vms_are_refused_before_any_connection(
    lab: str, agent: tuple[str, Path]
) -> None:
    """The agent is there and the token right: the refusal is the lab's, one line, exit 2, and
    it is the line ``list --json`` gives as the lab's ``peer_refusal`` (vm-check skips by it)."""
    peer, token_file = agent
    proc = run("run", lab, "--peer", peer, "--token-file", str(token_file))
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    listed = json.loads(run("list", "--json").stdout)
    refusal = {entry["name"]: entry["peer_refusal"] for entry in listed["labs"]}
    assert lines[0] == f"handshake-lab: {refusal[lab]}"
    assert [name for name, why in refusal.items() if why] == ["syn-flood", "dual-stack"]


@pytest.mark.parametrize("lab", ["syn-flood", "dual-stack"])
def test_placement_refuses_them_too_before_any_connection(lab: str) -> None:
    """Callers of ``place`` other than the CLI (play, sweep, tests) meet the same refusal, and
    no connection is tried: the peer here is a port nothing listens on."""
    loaded = load_lab(builtin_dir() / f"{lab}.toml")
    with (
        pytest.raises(UsageError) as refused,
        place(Topology.REMOTE, loaded, default_observers, peer="127.0.0.1:1"),
    ):
        pytest.fail("placed")
    assert str(refused.value) == peer_refusal(loaded)
