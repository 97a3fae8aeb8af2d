"""Soak: every lab N times in a row in every topology, then a kill at every step.

Run by hand as root (not by the tests; ``tests/faults`` samples the same checks)::

    .venv/bin/python bench/soak.py [--runs 50] [--labs close,reset] [--budget 2400]
    nohup .venv/bin/python bench/soak.py > /tmp/hslab-soak.log 2>&1 &

Phase 1, repeat: each lab ``--runs`` times in each topology it supports (loopback, netns,
netns-agent), the event loop alternating asyncio / uvloop, each run a real
``handshake-lab run LAB --json`` process. A run passes when it exits 0 and leaves nothing
(namespaces, trace instance, agent process, listener, registry file). A failing run's output is
saved to ``--out`` (default ``/tmp/hslab-soak``) for diagnosis.

Phase 2, kill sweep: each lab x topology x kill point (after the header, then after each step
but the last) x SIGINT / SIGTERM / SIGKILL. After SIGINT/SIGTERM the run must exit 130 with no
traceback and leave nothing; after SIGKILL what it left must be listed by
``doctor --cleanup --dry-run`` and gone after ``doctor --cleanup``.

``--budget`` bounds the wall time (seconds): a phase that runs out stops and says how far it got.
Prints two tables at the end. Exit 0 when every run passed and nothing was left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handshake_lab.spec.loader import builtin_names, find_lab
from tests.faults.support import CLI, Run, doctor_cleanup, wait_clean

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def topologies_of(lab: str) -> list[str]:
    tops = find_lab(lab).topologies
    out = ["loopback"] if "loopback" in tops else []
    if "netns" in tops and os.geteuid() == 0:
        out += ["netns", "netns-agent"]
    return out


def steps_of(lab: str, topology: str) -> int:
    return len(find_lab(lab).steps_for("netns" if topology != "loopback" else "loopback"))


def cause_of(rc: int, stdout: str, stderr: str) -> str:
    """One line: why a run failed (the first disagreeing step's mismatches, or stderr)."""
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return f"rc={rc} non-JSON stdout: {line[:80]}"
        if event.get("event") == "step" and not event.get("agrees", True):
            return f"rc={rc} step {event['id']}: {'; '.join(event['mismatches'])[:160]}"
    tail = stderr.strip().splitlines()[-1:] or ["(no stderr)"]
    return f"rc={rc} {tail[0][:160]}"


def repeat(labs: list[str], runs: int, out: Path, deadline: float) -> list[list[str]]:
    """Round-robin (run i of every lab and topology, then run i + 1) so that a budget cut
    lowers N evenly instead of dropping the last labs."""
    configs = [(lab, topology) for lab in labs for topology in topologies_of(lab)]
    passed: Counter[tuple[str, str]] = Counter()
    done: Counter[tuple[str, str]] = Counter()
    causes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for i in range(runs):
        if time.monotonic() > deadline:
            print(f"repeat: budget reached after {i} rounds", flush=True)
            break
        for lab, topology in configs:
            loop = ("asyncio", "uvloop")[i % 2]
            argv = [*CLI, "run", lab, "--json", "--topology", topology, "--loop", loop]
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            try:
                stdout, stderr = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            done[lab, topology] += 1
            left = wait_clean(proc.pid, timeout=5)
            if proc.returncode == 0 and not left:
                passed[lab, topology] += 1
                continue
            cause = cause_of(proc.returncode, stdout, stderr)
            if left:
                cause += f" LEFT {left}"
            causes[lab, topology][cause] += 1
            stem = out / f"{lab}-{topology}-{i}-{loop}"
            stem.with_suffix(".ndjson").write_text(stdout)
            stem.with_suffix(".err").write_text(stderr + f"\n# {cause}\n")
            print(f"  FAIL {lab} {topology} #{i} {loop}: {cause}", flush=True)
        print(f"repeat round {i + 1}/{runs} done", flush=True)
    rows = []
    for key in configs:
        n, ok = done[key], passed[key]
        text = " | ".join(f"{c}x {why}" for why, c in causes[key].items())
        rows.append([key[0], key[1], str(n), str(ok), str(n - ok), text])
    return rows


def kill_once(lab: str, topology: str, after: int, sig: signal.Signals) -> str | None:
    """One kill; None if every promise held, else what broke."""
    run = Run.start(lab, "--topology", topology)
    try:
        if not run.wait_events(after + 1, timeout=120):
            run.finish()
            return (
                f"ended before event {after + 1} (rc={run.proc.returncode}): {run.stderr[-200:]}"
            )
        run.proc.send_signal(sig)
        rc = run.finish(timeout=60)
    finally:
        run.kill_now()
    ports = run.ports
    if sig != signal.SIGKILL:
        if rc == 0:
            return None  # it finished before the signal landed: nothing to check but leftovers
        problems = []
        if rc != 130:
            problems.append(f"exit {rc} not 130")
        if "Traceback" in run.stderr:
            problems.append("traceback: " + run.stderr.strip().splitlines()[-1][:120])
        left = wait_clean(run.pid, ports, timeout=10)
        if left:
            problems.append(f"left {left}")
        return "; ".join(problems) or None
    # SIGKILL: what is left must be listed, then removed, by doctor.
    time.sleep(0)  # the agent leaves on PDEATHSIG; the checks below poll for it
    left = wait_clean(run.pid, ports, timeout=2)
    left.pop("listen", None)
    expected = set(left.get("netns", [])) | set(left.get("trace", []))
    listed = doctor_cleanup(dry_run=True, pid=run.pid)
    # Another run's stale cleanup (the other promised path) may remove them first when runs
    # are concurrent: only what is still there must be listed.
    still = wait_clean(run.pid, ports, timeout=0)
    present = set(still.get("netns", [])) | set(still.get("trace", []))
    missing = [name for name in expected if name not in listed.stdout and name in present]
    problems = []
    if missing:
        problems.append(f"dry-run did not list {missing}")
    if "agent" in left:
        problems.append(f"agent survived its SIGKILLed parent: {left['agent']}")
    cleaned = doctor_cleanup(dry_run=False, pid=run.pid)
    if cleaned.returncode != 0:
        problems.append(f"doctor --cleanup exit {cleaned.returncode}: {cleaned.stderr.strip()}")
    after_cleanup = wait_clean(run.pid, ports, timeout=5)
    if after_cleanup:
        problems.append(f"after doctor --cleanup still {after_cleanup}")
    return "; ".join(problems) or None


def kill_sweep(labs: list[str], deadline: float) -> list[list[str]]:
    rows = []
    for lab in labs:
        for topology in topologies_of(lab):
            steps = steps_of(lab, topology)
            for sig in SIGNALS:
                tried, failures = 0, defaultdict[str, list[int]](list)
                for after in range(steps):
                    if time.monotonic() > deadline:
                        break
                    tried += 1
                    problem = kill_once(lab, topology, after, sig)
                    if problem is not None:
                        failures[problem].append(after)
                        print(
                            f"  KILL FAIL {lab} {topology} {sig.name} after {after}: {problem}",
                            flush=True,
                        )
                rows.append(
                    [
                        lab,
                        topology,
                        sig.name,
                        str(tried),
                        str(tried - sum(len(v) for v in failures.values())),
                        " | ".join(f"after {v}: {k}" for k, v in failures.items()),
                    ]
                )
                print(
                    f"kill   {lab:<18} {topology:<11} {sig.name:<7} {rows[-1][4]}/{tried}",
                    flush=True,
                )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--labs", default=",".join(builtin_names()))
    parser.add_argument("--budget", type=float, default=2400.0, help="seconds, both phases")
    parser.add_argument(
        "--repeat-share", type=float, default=0.6, help="share of the budget phase 1 may use"
    )
    parser.add_argument("--no-repeat", action="store_true")
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/hslab-soak"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    labs = [name for name in args.labs.split(",") if name]
    start = time.monotonic()
    repeat_rows: list[list[str]] = []
    kill_rows: list[list[str]] = []
    if not args.no_repeat:
        share = args.budget if args.no_kill else args.budget * args.repeat_share
        repeat_rows = repeat(labs, args.runs, args.out, start + share)
    if not args.no_kill:
        kill_rows = kill_sweep(labs, start + args.budget)
    elapsed = time.monotonic() - start
    print(f"\nsoak finished in {elapsed / 60:.1f} min; failing runs saved in {args.out}\n")
    if repeat_rows:
        print(table(["lab", "topology", "runs", "pass", "fail", "causes"], repeat_rows))
        print()
    if kill_rows:
        print(table(["lab", "topology", "signal", "kills", "ok", "failures"], kill_rows))
    bad = any(r[4] != "0" for r in repeat_rows) or any(r[3] != r[4] for r in kill_rows)
    left = doctor_cleanup(dry_run=True).stdout.strip()
    print(f"\ndoctor --cleanup --dry-run at the end: {left}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
