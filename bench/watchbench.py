"""``watch`` refresh cost at N sockets: how many refreshes per second one core sustains.

Measured inside the bench namespace that ``run.py`` fills, for the whole table (no filter: the
worst case) and for one port (the kernel's filter). Each refresh is what ``watch`` does per
tick: read the table, update the owner map if needed, track transitions. Wall time and CPU
time (process time, all threads) are both reported: refreshes per second = 1 / wall median;
the CPU share says whether one core would be saturated.
"""

from __future__ import annotations

import statistics
import time

from handshake_lab.watch import Watcher
from handshake_lab.watch.tracker import WatchFilter


def watch_line(n: int, port: int | None, refreshes: int) -> str:
    watch_filter = WatchFilter(ports=frozenset({port}) if port is not None else None)
    watcher = Watcher(watch_filter)
    watcher.refresh()  # the first refresh reports every socket as new: not a steady tick
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(refreshes):
        w0, c0 = time.perf_counter(), time.process_time()
        watcher.refresh()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    wall = statistics.median(walls)
    cpu = statistics.median(cpus)
    per_second = 1 / wall if wall > 0 else float("inf")
    scope = "whole table" if port is None else f"port {port}"
    verdict = ""
    if port is None and n >= 50_000:
        verdict = "PASS  " if per_second >= 10 else "FAIL  "
    share = 100 * cpu / wall if wall else 0.0
    return (
        f"{verdict}watch refresh N={n:>6} {scope:<11}: {wall * 1000:7.1f} ms "
        f"({per_second:5.1f}/s), CPU {cpu * 1000:7.1f} ms ({share:3.0f}% of one core)"
        + ("  (target >= 10/s at 50 000)" if verdict else "")
    )
