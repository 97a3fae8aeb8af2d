"""--topology netns-agent from the command line (root): the agent serves the server side from
inside its namespace; nothing of this run outlives it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from handshake_lab.errors import ExitStatus

pytestmark = pytest.mark.root


def test_netns_agent_topology_runs_a_held_lab_and_leaves_nothing() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "handshake_lab", "run", "lost-last-ack", "--topology",
         "netns-agent", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitStatus.OK, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["topology"] == "netns-agent"
    steps = {e["id"]: e for e in events if e["event"] == "step"}
    assert steps["last-ack-held"]["observed"]["server"]["state"] == "LAST_ACK"
    assert steps["last-ack-held"]["holds"]["lastack"]["dropped"] >= 2
    # Only this run's objects (named after its pid): concurrent runs may have their own.
    mine = f"hslab-{proc.pid}-"
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert mine not in left.stdout
    agents = subprocess.run(
        ["pgrep", "-f", f"handshake_lab.agent.*--netns {mine}"], capture_output=True, check=False
    )
    assert agents.stdout == b""
