"""A client that reconnects from its old port must still have that port when it does.

Between its close and its reconnect the port is free, and on a busy machine another program's
connect() can be handed it; the reconnect then fails with EADDRINUSE. That raced on loopback
in CI (other test workers' connections). Here the race is made certain: the client's namespace
has only four ephemeral ports, and between the close and the reconnect a churn of four
connections leaves a TIME_WAIT on every one of them. The runner gives a client that will
reconnect a port outside ip_local_port_range, which no connect() is ever handed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import cli

pytestmark = pytest.mark.root

LOW, HIGH = 40000, 40003

LAB = f"""
schema = 1
name = "hslab-reconnect-port"
title = {{ en = "Reconnect after a churn", zh = "端口被占满后重新连接" }}
summary = {{ en = "all ports taken, then reconnect", zh = "端口全被占用后重连" }}
topologies = ["netns"]
echo = false
sysctls = {{ client = {{ "net.ipv4.ip_local_port_range" = "{LOW} {HIGH}" }} }}

[[step]]
id = "listen"
actor = "server"
action = "listen"
args = {{ backlog = 64 }}
outcome = "ok"
expect = {{ listener = "LISTEN" }}
explain = {{ en = "Listen.", zh = "监听。" }}

[[step]]
id = "connect"
actor = "client"
action = "connect"
outcome = "ok"
expect = {{ client = "ESTABLISHED", server = "ESTABLISHED" }}
explain = {{ en = "Connect.", zh = "连接。" }}

[[step]]
id = "server-closes"
actor = "server"
action = "close"
outcome = "ok"
expect = {{ server = "FIN_WAIT2", client = "CLOSE_WAIT" }}
explain = {{ en = "The server closes.", zh = "服务器关闭。" }}

[[step]]
id = "client-closes"
actor = "client"
action = "close"
outcome = "ok"
expect = {{ server = "TIME_WAIT", client = "ABSENT" }}
explain = {{ en = "The client closes.", zh = "客户端关闭。" }}

[[step]]
id = "churn"
actor = "client"
action = "churn"
args = {{ count = 4 }}
outcome = "ok"
timeout = 10.0
facts = {{ connected = 4, time_wait = 4 }}
explain = {{ en = "Every port ends in TIME_WAIT.", zh = "每个端口都处于 TIME_WAIT。" }}

[[step]]
id = "reconnect"
actor = "client"
action = "reconnect"
outcome = "ok"
expect = {{ client = "ESTABLISHED", server = "ESTABLISHED" }}
explain = {{ en = "Reconnect from the old port.", zh = "从原来的端口重新连接。" }}
"""


def test_reconnect_keeps_its_port_when_every_ephemeral_port_is_taken(tmp_path: Path) -> None:
    lab = tmp_path / "reconnect-port.toml"
    lab.write_text(LAB, encoding="utf-8")
    proc = cli("run", str(lab), "--topology", "netns", "--json", timeout=120)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps = {e["id"]: e for e in events if e.get("event") == "step"}
    assert proc.returncode == 0, (proc.stderr, steps.get("reconnect"))
    # The churn really used up the range: four TIME_WAITs, from the four ports it has.
    assert steps["churn"]["facts"]["time_wait"] == 4
    # The client's port, first and again, lies outside the range its namespace hands out.
    ports = {
        int(str(steps[sid]["observed"]["client"]["local"]).rsplit(":", 1)[1])
        for sid in ("connect", "reconnect")
    }
    assert len(ports) == 1, ports
    assert not LOW <= ports.pop() <= HIGH
