"""The lab-VM gate (``topo.vmhold``): holds in a VM's own namespace only behind the marker.

No VM, no nft, no socket: the marker checks run on files in a temporary directory, the
refusal through the real command line (it must stop before anything is opened).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handshake_lab.errors import ExitStatus, MissingDependencyError
from handshake_lab.placement import Topology
from handshake_lab.placement.place import step_set
from handshake_lab.spec.loader import find_lab
from handshake_lab.topo.registry import is_owned_name
from handshake_lab.topo.vmhold import (
    MARKER,
    MARKER_TEXT,
    TABLE_PREFIX,
    VmOps,
    lab_needs_vm_ops,
    marker_problem,
    table_name,
    vm_holds_allowed,
    vm_tables,
)

IS_ROOT = os.geteuid() == 0
HELD_LABS = ["lost-last-ack", "port-exhaustion", "simultaneous-close", "stale-syn"]


def write_marker(directory: Path, text: str = MARKER_TEXT + "\nrole=server\n") -> Path:
    directory.mkdir(mode=0o755, exist_ok=True)
    marker = directory / "provisioned-vm"
    marker.write_text(text)
    marker.chmod(0o644)
    return marker


def test_missing_marker_is_refused(tmp_path: Path) -> None:
    problem = marker_problem(tmp_path / "nope" / "provisioned-vm")
    assert problem is not None
    assert "missing" in problem
    assert not vm_holds_allowed(tmp_path / "nope" / "provisioned-vm", euid=0)


@pytest.mark.skipif(not IS_ROOT, reason="a root-owned marker needs root to create")
def test_root_owned_marker_opens_the_gate_for_root_only(tmp_path: Path) -> None:
    marker = write_marker(tmp_path / "etc")
    assert marker_problem(marker) is None
    assert vm_holds_allowed(marker, euid=0)
    assert not vm_holds_allowed(marker, euid=1000), "holds in a VM need root"


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_marker_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    marker = write_marker(tmp_path / "etc")
    os.chown(marker, 65534, 65534)
    assert "belong to root" in str(marker_problem(marker))


def test_marker_anyone_may_write_is_refused(tmp_path: Path) -> None:
    marker = write_marker(tmp_path / "etc")
    marker.chmod(0o666)
    assert marker_problem(marker) is not None
    marker.chmod(0o644)
    (tmp_path / "etc").chmod(0o777)  # a directory anyone can write: the file can be replaced
    assert marker_problem(marker) is not None


@pytest.mark.skipif(not IS_ROOT, reason="a root-owned marker needs root to create")
def test_marker_with_another_first_line_is_refused(tmp_path: Path) -> None:
    marker = write_marker(tmp_path / "etc", "hello\n")
    assert "provisioning line" in str(marker_problem(marker))


def test_vm_ops_cannot_be_made_without_the_marker(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="provisioned"):
        VmOps(tmp_path / "provisioned-vm", state_dir=tmp_path / "state")
    assert not (tmp_path / "state").exists(), "nothing may be recorded or changed"


def test_table_name_carries_the_tool_prefix_and_the_owner_pid() -> None:
    name = table_name(pid=4242)
    assert name.startswith(TABLE_PREFIX + "4242_")
    assert name.startswith("hslab_")
    assert is_owned_name(name)
    assert name != table_name(pid=4242), "two sessions of one process get two tables"


def test_only_our_vm_tables_are_picked_from_a_listing() -> None:
    listing = json.dumps(
        {
            "nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {"table": {"family": "inet", "name": "filter", "handle": 1}},
                {"table": {"family": "inet", "name": "hslab_vm_12_ab01", "handle": 2}},
                {"table": {"family": "ip", "name": "hslab_vm_13_ab02", "handle": 3}},
                {"table": {"family": "inet", "name": "hslab_1_2_server", "handle": 4}},
            ]
        }
    )
    assert vm_tables(listing) == ["hslab_vm_12_ab01"]


@pytest.mark.parametrize("name", HELD_LABS)
def test_held_labs_need_the_vm_operations_on_their_netns_steps(name: str) -> None:
    lab = find_lab(name)
    assert lab_needs_vm_ops(lab.steps_for("netns-agent"), lab.sysctls)


def test_a_lab_without_holds_needs_no_vm_operations() -> None:
    lab = find_lab("half-close")
    assert not lab_needs_vm_ops(lab.steps_for("netns-agent"), lab.sysctls)


@pytest.mark.skipif(MARKER.exists(), reason="this machine is a provisioned lab VM")
def test_a_remote_peer_runs_loopback_steps_off_the_lab_vms() -> None:
    assert step_set(Topology.REMOTE) == "loopback"


@pytest.mark.skipif(MARKER.exists(), reason="this machine is a provisioned lab VM")
@pytest.mark.parametrize("name", HELD_LABS)
def test_held_labs_are_refused_across_peer_without_the_marker(name: str) -> None:
    # Port 9 on loopback: nothing listens; the refusal must come before any connection.
    proc = subprocess.run(
        [sys.executable, "-m", "handshake_lab", "run", name, "--peer", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"HSLAB_AGENT_TOKEN": "x" * 43},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == ExitStatus.USAGE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(MARKER) in lines[0]
    assert "vagrant/provision.sh" in lines[0]
