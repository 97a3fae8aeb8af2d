"""The HTML report's cost beside the run it draws: render and write time, file size.

Each lab runs once as the command runs it (``handshake-lab run LAB --save FILE``, a real run
on this kernel; as root with packets and transitions, so the ladder is drawn in full), then
its saved record is drawn ``--repeats`` times: ``render`` is ``render_html`` alone, ``write``
adds the all-or-nothing file write ``--html`` does (temporary file, fsync, rename; a new
file each time). ``added`` is ``write`` as a share of the run's own wall time. The
targets of issue 15: writing adds under 100 ms to a run, and a 12-step lab's page stays under
300 KB. Runs alone too: ``python bench/reportbench.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from handshake_lab.cli.runlab import write_html
from handshake_lab.record.codec import read_run
from handshake_lab.render.html import render_html

LABS = ("half-close", "close", "port-reuse", "lost-last-ack", "port-exhaustion")
"""Loopback labs of 9-15 steps, and two namespace labs (dropped and resent segments,
many connections) when root."""
NETNS_LABS = frozenset({"lost-last-ack", "port-exhaustion"})
ADDED_MS_TARGET = 100.0
SIZE_TARGET = 300_000


def _median_ms(fn: object, repeats: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def report_lines(repeats: int) -> list[str]:
    labs = [lab for lab in LABS if os.geteuid() == 0 or lab not in NETNS_LABS]
    lines = [
        f"HTML report (run LAB --html): median of {repeats} renders of one real run's record",
        f"{'lab':<16}{'steps':>6}{'segs':>6}{'run ms':>9}{'render':>9}{'write':>9}"
        f"{'added':>8}{'KB':>8}",
        "-" * 71,
    ]
    worst_ms, biggest = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="hslab-bench-report-") as where:
        for lab in labs:
            saved = Path(where) / f"{lab}.jsonl"
            proc = subprocess.run(
                [sys.executable, "-m", "handshake_lab", "run", lab, "--save", str(saved)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=300,
                check=False,
            )
            if not saved.exists() or proc.returncode not in (0, 3):
                lines.append(f"{lab:<16} run failed ({proc.returncode}): {proc.stderr.strip()}")
                continue
            record = read_run(saved)
            run_ms = (record.result.duration_s if record.result else 0.0) * 1000
            page = render_html(record, "en")
            size = len(page.encode("utf-8"))
            render_ms = _median_ms(lambda r=record: render_html(r, "en"), repeats)
            targets = (Path(where) / f"{lab}-{i}.html" for i in itertools.count())
            write_ms = _median_ms(
                lambda r=record, t=targets: write_html(next(t), r, "en"), repeats
            )
            ratio = write_ms / run_ms * 100 if run_ms else 0.0
            worst_ms, biggest = max(worst_ms, write_ms), max(biggest, size)
            lines.append(
                f"{lab:<16}{len(record.steps):>6}{len(record.segments()):>6}{run_ms:>9.1f}"
                f"{render_ms:>9.2f}{write_ms:>9.2f}{ratio:>7.1f}%{size / 1000:>8.1f}"
            )
    lines.append(
        f"{'PASS' if worst_ms < ADDED_MS_TARGET else 'FAIL'}  writing the report adds "
        f"{worst_ms:.1f} ms at most (< {ADDED_MS_TARGET:.0f} ms)"
    )
    lines.append(
        f"{'PASS' if biggest < SIZE_TARGET else 'FAIL'}  largest page {biggest / 1000:.1f} KB "
        f"(< {SIZE_TARGET / 1000:.0f} KB)"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print("\n".join(report_lines(args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
