"""The host stays untouched, and leftovers of killed runs are found and removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handshake_lab.topo.nft import HoldKind, add_hold, dropped
from handshake_lab.topo.pair import NetnsPair
from handshake_lab.topo.registry import (
    KernelObject,
    RunRegistry,
    cleanup_leftovers,
    netns_exists,
    new_run_id,
    nft_table_name,
    object_name,
    stale_cleanup,
)
from tests.netns.helpers import host_snapshot, listener, poll_until, raw_states, start_connect

pytestmark = pytest.mark.root

SYSCTLS: dict[str, str | int | tuple[int, int]] = {
    "net.ipv4.tcp_synack_retries": 1,
    "net.ipv4.ip_local_port_range": (40000, 40009),
    "net.ipv4.tcp_tw_reuse": 1,
    "net.ipv4.tcp_timestamps": 1,
    "net.ipv4.tcp_max_tw_buckets": 0,
}


def test_host_network_configuration_is_unchanged_by_a_pair_with_sysctls_and_holds(
    tmp_path: Path,
) -> None:
    pair = NetnsPair(registry_dir=tmp_path, sysctls=SYSCTLS)
    # Its own objects, by name: namespaces, veths, nft tables (names carry the run id).
    names = [*pair.namespaces, pair.server_veth, pair.client_veth]
    names += [nft_table_name(ns) for ns in pair.namespaces]
    before = host_snapshot(list(SYSCTLS), names)
    assert before["nft"] == before["link"] == before["addr"] == ""
    with pair:
        hold = add_hold(pair.server_ns, HoldKind.DROP_SYN, 5002)
        add_hold(pair.client_ns, HoldKind.DROP_PURE_ACK, 5002)
        with (
            listener(pair.server_ns, pair.server_addr, 5002),
            start_connect(pair.client_ns, pair.server_addr, 5002),
        ):
            poll_until(lambda: raw_states(pair.client_ns, 5002) == {"SYN-SENT"}, what="SYN-SENT")
            poll_until(lambda: dropped(hold) >= 1, what="drop counted")
        during = host_snapshot(list(SYSCTLS), names)
    after = host_snapshot(list(SYSCTLS), names)
    assert during == before
    assert after == before


_VICTIM = """
import sys, time
from pathlib import Path
from handshake_lab.topo.pair import NetnsPair
pair = NetnsPair(registry_dir=Path(sys.argv[1])).create()
print(pair.server_ns, pair.client_ns, flush=True)
time.sleep(60)
"""


def _killed_run(registry: Path) -> list[str]:
    """Start a run in a child, SIGKILL it once its pair exists; return its namespaces."""
    with subprocess.Popen(
        [sys.executable, "-c", _VICTIM, str(registry)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as child:
        try:
            assert child.stdout is not None
            names = child.stdout.readline().split()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    assert len(names) == 2
    assert all(netns_exists(ns) for ns in names)
    return names


def test_stale_cleanup_removes_the_pair_of_a_sigkilled_run(tmp_path: Path) -> None:
    names = _killed_run(tmp_path)
    removed = stale_cleanup(tmp_path)
    assert sorted(obj.name for obj in removed) == sorted(names)
    assert not any(netns_exists(ns) for ns in names)
    assert list(tmp_path.glob("*.json")) == []
    assert stale_cleanup(tmp_path) == []


def test_stale_cleanup_spares_a_live_run(tmp_path: Path) -> None:
    with NetnsPair(registry_dir=tmp_path) as pair:
        assert stale_cleanup(tmp_path) == []
        assert all(netns_exists(ns) for ns in pair.namespaces)


def test_cleanup_leftovers_lists_then_removes_an_unrecorded_prefixed_netns(
    tmp_path: Path,
) -> None:
    # The name carries a pid that cannot be running (above any pid_max): a name with a live
    # pid is spared on purpose, since its creator may still be using it.
    orphan = object_name(new_run_id(pid=4194303), "orphan")
    registry = RunRegistry("unused", tmp_path)  # recorded, then "lost" with its file
    registry.record(KernelObject("netns", orphan))
    subprocess.run(["ip", "netns", "add", orphan], check=True, timeout=5)
    registry.remove_file()
    try:
        # pid=: this test's orphan only; other runs' leftovers on the machine are not ours.
        listed = cleanup_leftovers(dry_run=True, kinds=["netns"], pid=4194303)
        assert listed == [KernelObject("netns", orphan)]
        assert netns_exists(orphan)
        removed = cleanup_leftovers(dry_run=False, kinds=["netns"], pid=4194303)
        assert KernelObject("netns", orphan) in removed
        assert not netns_exists(orphan)
    finally:
        if netns_exists(orphan):
            subprocess.run(["ip", "netns", "delete", orphan], check=False, timeout=5)


def test_cleanup_leftovers_spares_a_live_recorded_run() -> None:
    with NetnsPair() as pair:  # the real registry: this process is alive
        listed = cleanup_leftovers(dry_run=True)
        assert not {KernelObject("netns", ns) for ns in pair.namespaces} & set(listed)


def test_an_unrecorded_namespace_named_after_a_live_process_is_spared(tmp_path: Path) -> None:
    """A run that has not recorded its namespace yet (or a benchmark) is not a leftover."""
    alive = object_name(new_run_id(), "young")  # carries this test's own pid
    subprocess.run(["ip", "netns", "add", alive], check=True, timeout=5)
    try:
        assert KernelObject("netns", alive) not in cleanup_leftovers(dry_run=True, kinds=["netns"])
        assert netns_exists(alive)
    finally:
        subprocess.run(["ip", "netns", "delete", alive], check=False, timeout=5)
