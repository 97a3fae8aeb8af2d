"""``make bench``: observers and event loops measured side by side in throwaway namespaces.

Needs root for everything but the start-up figures (it creates network namespaces named
``hslab-bench-<pid>``, one at a time, each removed before the next; nothing is changed on the
host). As a normal user it says what it skipped and measures start-up only.

Usage: python bench/run.py [--sizes 10,1000,10000,50000] [--repeats 7] [--churn-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import sys
import time
from types import FrameType

from churn import Churn, churn
from labfigures import lab_report
from nsbench import BenchNetns, fill, leftover_namespaces
from observers import Row, measure, table, targets
from reportbench import report_lines
from startup import report, report_fresh
from watchbench import watch_line

WATCH_LINES: list[str] = []
BUDGET_SECONDS = 270.0
"""Sizes not started by then are skipped, so a run stays under 5 minutes."""

NEEDS_ROOT = (
    "observer reads at N sockets (netlink vs ss+parse vs psutil): creates network namespaces",
    "connection churn asyncio vs uvloop: runs in a network namespace",
)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: namespaces removed


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1] for line in cpuinfo if line.startswith("model name")]
            model = names[0].strip() if names else model
    except OSError:
        pass
    return (
        f"nproc {os.cpu_count()}, {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _raise_nofile(want: int) -> int:
    """Raise the soft descriptor limit towards ``want`` (the hard limit may be lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError):  # no CAP_SYS_RESOURCE (containers): the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def observer_rows(sizes: list[int], repeats: int, start: float) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        if time.monotonic() - start > BUDGET_SECONDS:
            print(f"[bench] time budget spent: N={n} skipped", file=sys.stderr)
            continue
        with BenchNetns():
            began = time.monotonic()
            filled = fill(n)
            print(f"[bench] N={n}: filled in {time.monotonic() - began:.1f} s", file=sys.stderr)
            try:
                big = n >= 10_000
                rows += measure(n, filled, repeats, slow_repeats=3 if big else repeats)
                WATCH_LINES.append(watch_line(n, None, 5 if big else repeats))
                WATCH_LINES.append(watch_line(n, filled.probe_port, repeats))
            finally:
                filled.close()
            print(f"[bench] N={n}: measured in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return rows


def churn_lines(seconds: float) -> list[str]:
    results: dict[str, Churn] = {}
    for loop in ("asyncio", "uvloop"):
        with BenchNetns():  # a fresh table each, so neither pays for the other's TIME_WAITs
            results[loop] = churn(loop, seconds)
    lines = [f"connection churn ({seconds:g} s, 8 clients, connect + echo 4 B + close)"]
    for result in results.values():
        lines.append(
            f"  {result.loop:<8} {result.per_second:>8.0f} conn/s  "
            f"{result.connections:>6} connections  {result.time_wait:>6} TIME_WAIT left"
        )
    ratio = results["uvloop"].per_second / results["asyncio"].per_second
    verdict = "PASS" if ratio >= 1.3 else "FAIL"
    lines.append(f"{verdict}  uvloop / asyncio churn: {ratio:.2f}x (>= 1.3x)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000,50000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--churn-seconds", type=float, default=2.0)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    start = time.monotonic()
    print(f"machine: {machine()}")
    if os.geteuid() != 0:
        print("not root: skipped (they need root):")
        for item in NEEDS_ROOT:
            print(f"  - {item}")
        print("\n".join(report("host namespace")))
        print("\n".join(lab_report(args.repeats)))
        print()
        print("\n".join(report_lines(args.repeats)))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    limit = _raise_nofile(max(sizes) // 2 + 1024)
    fitting = [n for n in sizes if n * 0.34 + 512 < limit]
    if fitting != sizes:
        print(f"[bench] RLIMIT_NOFILE {limit}: sizes {sorted(set(sizes) - set(fitting))} skipped")
        sizes = fitting
    # The small-process figures first, on a quiet machine: tearing down a namespace that held
    # 50 000 sockets (or the churn's TIME_WAITs) keeps a kernel worker busy for seconds after
    # ``ip netns del`` returns, which slowed this observation 2x when it ran last.
    with BenchNetns():
        startup_lines = report_fresh("empty bench namespace")
    startup_lines += report_fresh("host namespace")[1:]
    try:
        rows = observer_rows(sizes, args.repeats, start)
        print()
        print(table(rows))
        print("\n".join(targets(rows)))
        print()
        print("\n".join(WATCH_LINES))
        print()
        print("\n".join(churn_lines(args.churn_seconds)))
        print()
        print("\n".join(startup_lines))
        print()
        print("\n".join(lab_report(args.repeats)))
        print()
        print("\n".join(report_lines(args.repeats)))
    finally:
        left = leftover_namespaces()
        if left:
            print(f"[bench] WARNING: namespaces left behind: {left}", file=sys.stderr)
    print(f"\n(total {time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
