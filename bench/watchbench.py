"""``watch`` refresh cost at N sockets: how many refreshes per second one core sustains.

Measured inside the bench namespace that ``run.py`` fills, for the whole table (no filter: the
worst case) and for one port (the kernel's filter). Each refresh is what ``watch`` does per
tick: read the table, update the owner map if needed, track transitions. Wall time and CPU
time (process time, all threads) are both reported: refreshes per second = 1 / wall median;
the CPU share says whether one core would be saturated.

Two watchers refresh in turn on the same table: the one ``watch`` uses (``watch.delta``:
only sockets that changed are decoded) and the plain path it replaced (every socket decoded,
then ``Tracker.update`` over all of them), so their ratio is measured under the same load.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from handshake_lab.watch import Watcher
from handshake_lab.watch.tracker import WatchFilter


@dataclass
class Timings:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def time(self, watcher: Watcher) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        watcher.refresh()
        self.walls.append(time.perf_counter() - w0)
        self.cpus.append(time.process_time() - c0)

    def text(self) -> str:
        wall = statistics.median(self.walls)
        cpu = statistics.median(self.cpus)
        per_second = 1 / wall if wall > 0 else float("inf")
        share = 100 * cpu / wall if wall else 0.0
        return (
            f"{wall * 1000:7.1f} ms ({per_second:5.1f}/s), "
            f"CPU {cpu * 1000:7.1f} ms ({share:3.0f}% of one core)"
        )

    def per_second(self) -> float:
        wall = statistics.median(self.walls)
        return 1 / wall if wall > 0 else float("inf")


def watch_line(n: int, port: int | None, refreshes: int) -> str:
    watch_filter = WatchFilter(ports=frozenset({port}) if port is not None else None)
    delta, plain = Watcher(watch_filter), Watcher(watch_filter, delta=False)
    try:
        delta.refresh()  # the first refresh reports every socket as new: not a steady tick
        plain.refresh()
        fast, slow = Timings(), Timings()
        for _ in range(refreshes):
            fast.time(delta)
            slow.time(plain)
    finally:
        delta.close()
        plain.close()
    scope = "whole table" if port is None else f"port {port}"
    verdict = ""
    if port is None and n >= 50_000:
        verdict = "PASS  " if fast.per_second() >= 10 else "FAIL  "
    ratio = statistics.median(slow.walls) / statistics.median(fast.walls)
    return (
        f"{verdict}watch refresh N={n:>6} {scope:<11}: {fast.text()}"
        + ("  (target >= 10/s at 50 000)" if verdict else "")
        + f"\n      plain path, every socket decoded: {slow.text()}  (delta {ratio:.1f}x faster)"
    )
