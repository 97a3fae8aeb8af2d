"""Kill every built-in lab mid-run with SIGINT, SIGTERM and SIGKILL; nothing may be left.

Each lab runs in its default topology and, when it can run in namespaces, also in
``netns-agent`` (the server side in an agent process inside the server namespace). The test
samples one kill point per signal (``support.kill_points``: SIGINT after step 1, SIGTERM after
the middle step, SIGKILL after the last-but-one step); ``bench/soak.py`` kills after every step
with every signal.

After SIGINT/SIGTERM: exit 130, no traceback, and nothing of the run's: no namespace, no host
nft table, no trace instance, no agent process, no listener on the lab's ports, no registry
file. After SIGKILL the run cannot clean up: what it left must be listed by
``doctor --cleanup --dry-run`` and gone after ``doctor --cleanup``, while decoy namespaces
without the prefix (``keep-<pid>``, ``hslabx<pid>``) are never listed and survive.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.placement import Topology
from handshake_lab.spec.loader import builtin_names, find_lab
from tests.faults.support import (
    Run,
    agent_processes,
    doctor_cleanup,
    kill_points,
    leftovers,
    netns_names,
    poll_until,
    wait_clean,
)

IS_ROOT = os.geteuid() == 0


def _configs() -> list[object]:
    params: list[object] = []
    for lab in builtin_names():
        tops = find_lab(lab).topologies
        # An agent serves one address: a dual-stack lab is refused there before step 1.
        agent = "netns" in tops and not find_lab(lab).dual
        runs = [tops[0]] + (["netns-agent"] if agent else [])
        for topology in runs:
            steps = len(find_lab(lab).steps_for(Topology(topology).step_set))
            for sig, after in kill_points(steps).items():
                marks = [pytest.mark.root] if topology != "loopback" else []
                params.append(
                    pytest.param(
                        lab, topology, sig, after, marks=marks, id=f"{lab}-{topology}-{sig.name}"
                    )
                )
    return params


def _stop_at(lab: str, topology: str, after: int, sig: signal.Signals) -> Run:
    """Start the run, wait for step ``after``'s event, send ``sig``, wait for the exit."""
    run = Run.start(lab, "--topology", topology)
    try:
        reached = run.wait_events(after + 1, timeout=90)
        assert reached, f"the run ended before step {after}: {run.finish()} {run.stderr}"
        run.proc.send_signal(sig)
        run.finish(timeout=60)
    finally:
        run.kill_now()
    return run


@pytest.mark.parametrize(("lab", "topology", "sig", "after"), _configs())
def test_killed_run_leaves_nothing_behind(
    lab: str, topology: str, sig: signal.Signals, after: int
) -> None:
    if sig == signal.SIGKILL:
        _sigkill_case(lab, topology, after)
        return
    run = _stop_at(lab, topology, after, sig)
    assert run.proc.returncode == ExitStatus.INTERRUPTED, run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "interrupted" in run.stderr or "terminated" in run.stderr
    assert run.events[-1]["event"] != "result"
    assert wait_clean(run.pid, run.ports) == {}


def _decoys() -> list[str]:
    """Namespaces that look close to ours but are not: cleanup must never list them."""
    names = [f"keep-{os.getpid()}", f"hslabx{os.getpid()}"]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    return names


def _sigkill_case(lab: str, topology: str, after: int) -> None:
    decoys = _decoys() if IS_ROOT else []
    try:
        run = _stop_at(lab, topology, after, signal.SIGKILL)
        assert run.proc.returncode == -signal.SIGKILL, run.stderr
        # The agent gets SIGTERM from the kernel when its parent dies (PR_SET_PDEATHSIG).
        poll_until(
            lambda: not agent_processes(f"hslab-{run.pid}-"),
            timeout=10,
            what="the agent to follow its SIGKILLed parent",
        )
        left = leftovers(run.pid, run.ports)
        assert "listen" not in left, "sockets die with their process"
        assert "nft" not in left, "nft tables live only inside the run's namespaces"
        if IS_ROOT and topology != "loopback":
            # Killed mid-lab: its namespaces are there, unless another run's start-up sweep
            # of dead runs' objects (the other promised path; other runs share this machine)
            # has begun removing them: then its record goes last, so one of the two is left.
            assert left.get("netns") or "registry" not in left, left
            assert len(left.get("netns", [])) <= 2, left
        listed = doctor_cleanup(dry_run=True, pid=run.pid)
        assert listed.returncode == 0, listed.stderr
        expected = [f"would remove netns {name}" for name in left.get("netns", [])]
        expected += [f"would remove trace_instance {name}" for name in left.get("trace", [])]
        expected += [f"would remove agent_dir {name}" for name in left.get("tmp", [])]
        gone = leftovers(run.pid, run.ports)
        for line in expected:
            name = line.rsplit(" ", 1)[1]
            # Listed, unless another run's start-up sweep of stale leftovers (the other
            # promised path) has removed it meanwhile: then it must really be gone.
            still_there = name in [
                n for kind in ("netns", "trace", "tmp") for n in gone.get(kind, [])
            ]
            assert line in listed.stdout or not still_there, listed.stdout
        for line in listed.stdout.splitlines():
            if line.startswith("would remove"):
                assert line.split()[3].startswith(("hslab-", "hslab_")), line
        for decoy in decoys:
            assert decoy not in listed.stdout
        cleaned = doctor_cleanup(dry_run=False, pid=run.pid)
        assert cleaned.returncode == 0, cleaned.stderr
        assert wait_clean(run.pid, run.ports) == {}
        for decoy in decoys:
            assert decoy in netns_names(), f"doctor --cleanup removed {decoy}"
    finally:
        for decoy in decoys:
            subprocess.run(["ip", "netns", "delete", decoy], check=False, capture_output=True)
