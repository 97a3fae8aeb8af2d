"""SIGHUP, SIGQUIT, SIGTERM and SIGINT end a netns run like Ctrl-C: exit 130, nothing left.

A closed terminal (SIGHUP) and Ctrl-\\ (SIGQUIT) used to kill a run with no cleanup at all
(exit 129/131; namespaces, registry file and trace instance left until the next run). Here
each signal goes to the run's whole process group, as a terminal sends it (the agent of a
netns-agent run gets it too), at several points: right after the topology is up (the
header), in the middle, and at the last-but-one step. Only this run's objects are looked
for (``support.leftovers``: names carry the run's pid), never whatever else is on the host.
"""

from __future__ import annotations

import os
import signal

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.spec.loader import find_lab
from tests.faults.support import Run, wait_clean

LAB = "lost-last-ack"  # holds a segment with nft in the lab's namespace: every kind of object
SIGNALS = [signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT]


def _points() -> list[int]:
    steps = len(find_lab(LAB).steps_for("netns"))
    return [0, steps // 2, steps - 1]  # events seen: the header, then one per step


@pytest.mark.root
@pytest.mark.parametrize("after", _points())
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
@pytest.mark.parametrize("topology", ["netns", "netns-agent"])
def test_a_terminating_signal_leaves_nothing_of_the_run(
    topology: str, sig: signal.Signals, after: int
) -> None:
    run = Run.start(LAB, "--topology", topology, own_group=True)
    try:
        reached = run.wait_events(after + 1, timeout=90)
        assert reached, f"the run ended before step {after}: {run.finish()} {run.stderr}"
        os.killpg(run.pid, sig)
        status = run.finish(timeout=60)
    finally:
        run.kill_now()
    assert status == ExitStatus.INTERRUPTED, (status, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "interrupted" in lines[0] or "terminated" in lines[0], lines[0]
    assert run.events[-1]["event"] != "result"
    assert wait_clean(run.pid, run.ports) == {}
