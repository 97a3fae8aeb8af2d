"""One run, one record: the namespace pair and the trace instance of a run share a registry
file. Before the fix each wrote its own list over the other's, so a netns run's record named
only its trace instance, and the next run's stale cleanup left a SIGKILLed run's namespaces."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from handshake_lab.topo.registry import KernelObject, RunRegistry, read_registries
from tests.faults.support import Run, leftovers, wait_clean

NS = KernelObject("netns", "hslab-1-abcd-srv")
TRACE = KernelObject("trace_instance", "hslab-1-abcd")


def test_two_writers_of_one_run_keep_each_others_objects(tmp_path: Path) -> None:
    pair = RunRegistry("1-abcd", tmp_path)
    evidence = RunRegistry("1-abcd", tmp_path)
    pair.record(NS)
    evidence.record(TRACE)
    (entry,) = read_registries(tmp_path)
    assert set(entry.objects) == {NS, TRACE}
    evidence.forget(TRACE)
    (entry,) = read_registries(tmp_path)
    assert entry.objects == (NS,)
    pair.forget(NS)
    assert list(read_registries(tmp_path)) == []


@pytest.mark.root
def test_next_run_removes_what_a_sigkilled_netns_run_left() -> None:
    killed = Run.start("half-close", "--topology", "netns")
    try:
        assert killed.wait_events(3, timeout=60), killed.stderr
        killed.proc.send_signal(signal.SIGKILL)
        killed.finish(timeout=30)
    finally:
        killed.kill_now()
    left = leftovers(killed.pid)
    assert len(left.get("netns", [])) == 2, left
    nxt = Run.start("simultaneous-open", "--topology", "netns")  # its stale_cleanup acts
    try:
        assert nxt.finish(timeout=60) == 0, nxt.stderr
    finally:
        nxt.kill_now()
    assert wait_clean(killed.pid, timeout=5) == {}
    assert wait_clean(nxt.pid, nxt.ports) == {}
