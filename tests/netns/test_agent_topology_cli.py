"""--topology netns-agent from the command line (root): the agent serves the server side from
inside its namespace; nothing outlives the run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from handshake_lab.errors import ExitStatus

pytestmark = pytest.mark.root


def test_netns_agent_topology_runs_a_held_lab_and_leaves_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "handshake_lab", "run", "lost-last-ack", "--topology",
         "netns-agent", "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == ExitStatus.OK, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["topology"] == "netns-agent"
    steps = {e["id"]: e for e in events if e["event"] == "step"}
    assert steps["last-ack-held"]["observed"]["server"]["state"] == "LAST_ACK"
    assert steps["last-ack-held"]["holds"]["lastack"]["dropped"] == 1
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert "hslab-" not in left.stdout.replace("hslab-bench", "")
    agents = subprocess.run(
        ["pgrep", "-f", "handshake_lab.agent"], capture_output=True, check=False
    )
    assert agents.stdout == b""
