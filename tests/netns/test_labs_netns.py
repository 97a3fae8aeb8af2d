"""Every built-in lab in the two-namespace topology (root): the same asyncio/uvloop code as on
loopback, sockets created inside the namespaces, each end's table read in its own namespace."""

from __future__ import annotations

import asyncio
import subprocess
from functools import partial

import pytest

from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.defaults import default_observers
from handshake_lab.placement import Topology
from handshake_lab.placement.place import ip_for, place
from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab
from handshake_lab.spec.model import ABSENT
from tests.integration.labrun import Recorded, assert_fits_the_terminal

pytestmark = pytest.mark.root


def hslab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith("hslab-")]


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_lab_agrees_with_the_kernel_in_namespaces(name: str, loop_name: str) -> None:
    lab = load_lab(builtin_dir() / f"{name}.toml")
    recorded = Recorded()
    # A dual-stack lab's observers read both families (ip_for); the others read IPv4.
    observers = partial(default_observers, ip_for(lab, 4))
    with place(Topology.NETNS, lab, observers) as ends:
        assert ends.host.startswith("198.18.")
        assert ends.netns is not None
        namespaces = {ends.netns.server_ns, ends.netns.client_ns}
        assert namespaces <= set(hslab_namespaces())
        runner = LabRun(
            lab,
            RunOptions(loop=loop_name, topology=Topology.NETNS, host=ends.host, host6=ends.host6),
            ends.observers,
            recorded,
            server=ends.server,
            clients=ends.clients,
        )
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as r:
            r.run(runner.run())
    assert not namespaces & set(hslab_namespaces())
    for step in lab.steps_for("netns"):
        report = recorded.steps[step.id]
        assert report.mismatches == [], (step.id, report.mismatches)
        for side, expected in step.expect.items():
            observed = report.observed[side]
            assert observed.state == (expected.name if expected else ABSENT), (step.id, side)
            if expected is not None:
                assert observed.local is not None
                # Ours only: 198.18.0.0/24; a dual-stack lab also 2001:db8:198:18::/64 and
                # the wildcards it listens on (inside the server's namespace).
                dual = ("[2001:db8:198:18::", "[::]:", "0.0.0.0:")
                ours = ("198.18.0.", *dual) if lab.dual else ("198.18.0.",)
                assert observed.local.startswith(ours), (step.id, side)
                # psutil sees the namespace's sockets (it must be read on the main thread).
                assert observed.sources["psutil"] == expected.name, (step.id, side)
    assert recorded.result.passed
    # As a terminal shows this run: 80 columns in en and zh, no trailing spaces.
    assert_fits_the_terminal(recorded.record(), [s.explain.en for s in lab.steps_for("netns")])
    assert recorded.audit() == []  # and `grade` finds its record consistent
