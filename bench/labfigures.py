"""Lab-level figures, measured side by side in one run.

- ``run half-close`` in-process on loopback: wall time, the part spent waiting for the kernel
  (``settle``: bounded polls until the expected states appear, which includes any timer a lab
  waits on), and the difference, which is the tool's own cost per run.
- The netns topology: time to set up and tear down a pair (target under 0.5 s).
- The per-step overhead of packet capture and of the transition stream: ``half-close`` in the
  netns topology with neither, capture only, trace only and both, interleaved round-robin so
  that machine noise spreads evenly, reported as medians and as differences per step.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from handshake_lab.lab.evidence import evidence_for
from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.defaults import default_observers
from handshake_lab.placement import Topology
from handshake_lab.placement.place import place
from handshake_lab.record.events import Event, LabResult
from handshake_lab.spec.loader import find_lab
from handshake_lab.topo.pair import NetnsPair


def _run(topology: str, capture: bool, trace: bool, loop: str = "asyncio") -> LabResult:
    lab = find_lab("half-close")
    events: list[Event] = []
    with place(Topology(topology), lab, default_observers, loop=loop) as ends:
        evidence = (
            evidence_for(ends, capture=capture, trace=trace, pcap=False)
            if capture or trace
            else None
        )
        runner = LabRun(
            lab,
            RunOptions(loop=loop, topology=Topology(topology), host=ends.host),
            ends.observers,
            events.append,
            server=ends.server,
            clients=ends.clients,
            evidence=evidence,
            shared_table=ends.shared_table or None,
        )
        with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
            return r.run(runner.run())


def loopback_lines(repeats: int) -> list[str]:
    walls, settles = [], []
    for _ in range(repeats):
        result = _run("loopback", capture=False, trace=False)
        assert result.passed, result
        walls.append(result.duration_s)
        settles.append(result.settle_s)
    wall = statistics.median(walls) * 1000
    settle = statistics.median(settles) * 1000
    own = statistics.median(w - s for w, s in zip(walls, settles, strict=True)) * 1000
    # half-close declares no waits (no 'stay', no timer it waits on), so its wall time is the
    # figure with declared waits excluded; settle = polling and confirming reads after actions.
    return [
        f"run half-close (loopback, in-process, median of {repeats}; it declares no waits): "
        f"wall {wall:.0f} ms = actions {own:.0f} ms + reading the kernel until it agrees "
        f"{settle:.0f} ms",
    ]


def topology_lines(repeats: int) -> list[str]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with NetnsPair(server_sysctls={"net.ipv4.tcp_synack_retries": 2}):
            pass
        times.append(time.perf_counter() - t0)
    median = statistics.median(times) * 1000
    verdict = "PASS" if median < 500 else "FAIL"
    return [
        f"{verdict}  netns pair set-up + tear-down: median {median:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms over {repeats} (< 500 ms)"
    ]


def evidence_lines(rounds: int) -> list[str]:
    modes = {
        "neither": (False, False),
        "capture": (True, False),
        "trace": (False, True),
        "both": (True, True),
    }
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    steps = 0
    for _ in range(rounds):
        for mode, (capture, trace) in modes.items():
            result = _run("netns", capture=capture, trace=trace)
            assert result.passed, (mode, result)
            walls[mode].append(result.duration_s - result.settle_s)
            steps = result.steps
    base = statistics.median(walls["neither"])
    lines = [f"half-close in netns, tool's own time per run (median of {rounds}, round-robin):"]
    for mode, values in walls.items():
        median = statistics.median(values)
        extra = (median - base) / steps * 1000
        lines.append(
            f"  {mode:<8} {median * 1000:7.1f} ms   overhead per step vs neither: {extra:+6.2f} ms"
        )
    return lines


def lab_report(repeats: int = 7) -> list[str]:
    lines = loopback_lines(repeats)
    if os.geteuid() != 0:
        lines.append("netns figures skipped: they need root")
        return lines
    lines += topology_lines(max(repeats, 10))
    lines += evidence_lines(repeats)
    return lines


if __name__ == "__main__":
    print("\n".join(lab_report()))
