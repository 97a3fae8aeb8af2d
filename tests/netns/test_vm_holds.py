"""The lab-VM path end to end without VMs: two namespaces stand in for the two VMs.

Each "VM" is a namespace of a ``NetnsPair`` whose processes see a private /etc (an overlay in
their own mount namespace) holding the provisioning marker; the host's /etc never has it. The
agent runs in the server namespace as it runs on the server VM (no ``--netns``), the client
runs ``run LAB --peer`` in the other, so the holds and sysctls land in each "VM"'s own
namespace through ``topo.vmhold``, and must be gone again when the run ends.
"""

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
from handshake_lab.topo.pair import NetnsPair, get_sysctl
from handshake_lab.topo.vmhold import MARKER_TEXT

pytestmark = pytest.mark.root

MARKED = (
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0/up,workdir=$0/work" /etc'
    " && mkdir -p /etc/handshake-lab"
    f" && printf '%s\\n' '{MARKER_TEXT}' > /etc/handshake-lab/provisioned-vm"
    ' && exec "$@"'
)


def in_vm(ns: str, scratch: Path, argv: list[str]) -> list[str]:
    """ARGV inside ``ns`` with the marker visible to it alone."""
    (scratch / "up").mkdir(parents=True)
    (scratch / "work").mkdir()
    return ["ip", "netns", "exec", ns, "sh", "-c", MARKED, str(scratch), *argv]


@pytest.fixture
def agent(pair: NetnsPair, tmp_path: Path) -> Iterator[tuple[str, str]]:
    token = tmp_path / "token"
    token.write_text("t" * 43 + "\n")
    token.chmod(0o600)
    argv = [sys.executable, "-m", "handshake_lab", "agent", "--bind", pair.server_addr]
    argv += ["--port", "7878", "--token-file", str(token)]
    proc = subprocess.Popen(
        in_vm(pair.server_ns, tmp_path / "server", argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert decode_ready(proc.stdout.readline())[1] == 7878
        yield f"{pair.server_addr}:7878", "t" * 43
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()


def nft_tables(ns: str) -> str:
    argv = ["ip", "netns", "exec", ns, "nft", "list", "tables"]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


@pytest.mark.parametrize("lab", ["lost-last-ack", "port-exhaustion", "simultaneous-close"])
def test_held_lab_runs_across_peer_on_marked_vms_and_leaves_nothing(
    pair: NetnsPair, agent: tuple[str, str], tmp_path: Path, lab: str
) -> None:
    peer, token = agent
    before = get_sysctl(pair.client_ns, "net.ipv4.ip_local_port_range")
    argv = [sys.executable, "-m", "handshake_lab", "run", lab, "--peer", peer, "--json"]
    done = subprocess.run(
        in_vm(pair.client_ns, tmp_path / "client", [*argv, "--no-capture"]),
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"HSLAB_AGENT_TOKEN": token},
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["passed"] is True
    counted = [h["dropped"] for e in events if e["event"] == "step" for h in e["holds"].values()]
    if lab != "port-exhaustion":
        assert counted, "the holds' nft counters are the evidence"
        assert max(counted) >= 1
    for ns in (pair.server_ns, pair.client_ns):
        assert "hslab_vm_" not in nft_tables(ns)
    assert get_sysctl(pair.client_ns, "net.ipv4.ip_local_port_range") == before
    assert not Path("/etc/handshake-lab/provisioned-vm").exists()
