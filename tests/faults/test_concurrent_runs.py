"""Two runs of one lab at the same time: both pass, share nothing, and each removes only its own.

Run ids, namespaces and trace instances are read from each run's registry file (written before
anything is created) while both run. On loopback the two runs share one stack, so their ports
must differ; in namespaces each run has its own stack and ports may coincide harmlessly.
"""

from __future__ import annotations

import json
import os
from functools import partial

import pytest

from handshake_lab.topo.registry import registry_dir
from tests.faults.support import Run, poll_until, wait_clean

IS_ROOT = os.geteuid() == 0
PAIRS = [
    pytest.param("loopback", "loopback", id="loopback+loopback"),
    pytest.param("netns", "netns", marks=pytest.mark.root, id="netns+netns"),
    pytest.param("loopback", "netns", marks=pytest.mark.root, id="loopback+netns"),
]


def _registry(pid: int) -> dict[str, object]:
    """The run's registry contents (run id -> objects); empty before anything is recorded."""
    out: dict[str, object] = {}
    for path in registry_dir().glob(f"{pid}-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out[data["run_id"]] = sorted(obj["name"] for obj in data["objects"])
    return out


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_two_runs_at_once_do_not_collide(first: str, second: str) -> None:
    lab = "handshake"  # long enough (SYN retransmit waits) to read both records mid-run
    runs = [Run.start(lab, "--topology", first), Run.start(lab, "--topology", second)]
    try:
        for run in runs:
            assert run.wait_events(2, timeout=60), run.stderr  # header and step 1
        records = []
        if IS_ROOT:
            for run in runs:
                records.append(
                    poll_until(partial(_registry, run.pid), timeout=10, what="registry")
                )
        codes = [run.finish(timeout=120) for run in runs]
    finally:
        for run in runs:
            run.kill_now()
    assert codes == [0, 0], [run.stderr for run in runs]
    assert all(run.events[-1]["passed"] for run in runs)
    if first == second == "loopback":
        assert set(runs[0].ports).isdisjoint(runs[1].ports)
    if records:
        assert set(records[0]).isdisjoint(records[1]), "run ids must differ"
        names = [
            {name for objs in rec.values() for name in objs}  # type: ignore[attr-defined]
            for rec in records
        ]
        assert names[0].isdisjoint(names[1]), names
        for topology, rec_names in zip((first, second), names, strict=True):
            if topology == "netns":
                assert sum(name.endswith(("-srv", "-cli")) for name in rec_names) == 2
    for run in runs:
        assert wait_clean(run.pid, run.ports) == {}


@pytest.mark.root
def test_a_short_run_ending_does_not_touch_a_longer_one() -> None:
    """The short run's teardown and the next run's stale cleanup leave a live run alone."""
    long = Run.start("handshake", "--topology", "netns")
    try:
        assert long.wait_events(2, timeout=60), long.stderr
        for _ in range(2):
            short = Run.start("simultaneous-open", "--topology", "netns")
            try:
                assert short.finish(timeout=60) == 0, short.stderr
            finally:
                short.kill_now()
            assert wait_clean(short.pid, short.ports) == {}
        assert long.finish(timeout=120) == 0, long.stderr
    finally:
        long.kill_now()
    assert long.events[-1]["passed"]
    assert wait_clean(long.pid, long.ports) == {}
