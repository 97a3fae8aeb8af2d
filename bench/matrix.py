"""``make matrix``: every built-in lab on every loop, placement and IP version, as a user runs it.

Each cell is one real ``handshake-lab run LAB --loop L --topology T --ip V --json`` in a child
process: the CLI's own path (placement, observers, capture and trace where permitted, exit
code). A cell passes when the run exits 0 and its ``result`` event says every step agreed with
the kernel. The table prints the wall time of each run; two runs go side by side by default
(the tool keeps concurrent runs apart: its own namespaces, ports and nft tables).

Not a test (the test suite runs the same labs in-process, with assertions on the segments);
this is the table a closing note or a release gives: what passes where, and how long it takes.
Namespaced placements need root (or an unprivileged user namespace); as a normal user the netns
cells run through the user namespace where the lab allows it and fail with the tool's own
one-line reason where it does not.

Usage: python bench/matrix.py [--labs a,b] [--loops asyncio,uvloop]
       [--topologies loopback,netns,netns-agent] [--ip 4,6] [--jobs 2] [--markdown]
Exit status: 0 when every cell passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab
from handshake_lab.spec.model import STEP_SETS

TIMEOUT_S = 300.0
PLACEMENTS = ("loopback", "netns", "netns-agent")


DUAL = 0
"""A lab of both families (``ip = "dual"``): run without ``--ip``, never at an agent."""


@dataclass(frozen=True)
class Cell:
    lab: str
    loop: str
    topology: str
    ip: int  # 4, 6, or DUAL


@dataclass(frozen=True)
class Outcome:
    cell: Cell
    passed: bool
    seconds: float
    detail: str


def cells(labs: list[str], loops: list[str], topologies: list[str], ips: list[int]) -> list[Cell]:
    """The combinations each lab declares: a lab lists its topologies, and each placement
    belongs to one (``spec.model.STEP_SETS``: ``netns-agent`` runs a ``netns`` lab). A lab of
    both families runs once per placement without ``--ip`` (which it refuses), and not at an
    agent (one address: refused by design, docs/labs.md)."""
    out = []
    for name in labs:
        lab = load_lab(builtin_dir() / f"{name}.toml")
        for topology in topologies:
            if STEP_SETS[topology] not in lab.topologies:
                continue
            if lab.dual:
                if topology != "netns-agent":
                    out += [Cell(name, loop, topology, DUAL) for loop in loops]
                continue
            out += [Cell(name, loop, topology, ip) for ip in ips for loop in loops]
    return out


def run(cell: Cell) -> Outcome:
    argv = [
        sys.executable,
        "-m",
        "handshake_lab",
        "run",
        cell.lab,
        "--loop",
        cell.loop,
        "--topology",
        cell.topology,
        *(["--ip", str(cell.ip)] if cell.ip != DUAL else []),
        "--json",
    ]
    start = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Outcome(cell, False, time.monotonic() - start, f"no end after {TIMEOUT_S:.0f} s")
    seconds = time.monotonic() - start
    result: dict[str, object] = {}
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "result":
            result = event
    passed = done.returncode == 0 and result.get("passed") is True
    if passed:
        detail = f"{result.get('agreed')}/{result.get('steps')}"
    else:
        last = done.stderr.strip().splitlines()[-1:] or [""]
        detail = f"exit {done.returncode}: {last[0][:100]}"
        if result:
            detail = f"exit {done.returncode}, disagreed: {result.get('disagreed_steps')}"
    return Outcome(cell, passed, seconds, detail)


def table(outcomes: list[Outcome], loops: list[str], *, markdown: bool) -> list[str]:
    """One row per lab, placement and IP version; one column per loop."""
    rows: dict[tuple[str, str, int], dict[str, Outcome]] = {}
    for o in outcomes:
        rows.setdefault((o.cell.lab, o.cell.topology, o.cell.ip), {})[o.cell.loop] = o
    head = ["lab", "placement", "ip", *loops]
    body = []
    for (lab, topology, ip), by_loop in rows.items():
        shown = []
        for loop in loops:
            cell = by_loop.get(loop)
            if cell is None:
                shown.append("-")
            else:
                verdict = "pass" if cell.passed else "FAIL"
                failure = "" if cell.passed else cell.detail
                shown.append(f"{verdict} {cell.seconds:5.1f} s {failure}")
        family = "v4+v6" if ip == DUAL else f"v{ip}"
        body.append([lab, topology, family, *(s.rstrip() for s in shown)])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return lines + ["| " + " | ".join(r) + " |" for r in body]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *body]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", default=",".join(builtin_names()))
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--topologies", default=",".join(PLACEMENTS))
    parser.add_argument("--ip", default="4,6")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    labs = [name for name in args.labs.split(",") if name]
    unknown = sorted(set(labs) - set(builtin_names()))
    if unknown:
        print(f"matrix: unknown lab(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    loops = args.loops.split(",")
    todo = cells(labs, loops, args.topologies.split(","), [int(v) for v in args.ip.split(",")])
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(run, todo))
    for line in table(outcomes, loops, markdown=args.markdown):
        print(line)
    passed = sum(o.passed for o in outcomes)
    print(
        f"{passed}/{len(outcomes)} runs passed in {time.monotonic() - start:.0f} s "
        f"({args.jobs} side by side; sum of run times {sum(o.seconds for o in outcomes):.0f} s)"
    )
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
