"""The summary of ``make vm-check``: lab x loop, pass/fail, seconds, held states seen by ss.

Reads the directory ``vagrant/vm-check.sh`` filled: ``runs.tsv`` (lab, loop, exit status,
seconds), ``LAB.LOOP.jsonl`` (the run's NDJSON events, from the client VM) and
``ss.server.log`` / ``ss.client.log`` (what ``vagrant/ss-sampler.sh``, a second reader, saw on
each VM). A *held step* is a step reported while one of the run's nft holds was active; each
state it expected (other than ABSENT and LISTEN) must also appear in that VM's ss log on the
same 4-tuple, or the run fails even if handshake-lab said the kernel agreed.

The RTT sweep (``sweep.json``, ``sweep.rc``: ``handshake-lab sweep handshake --delay 0,50,200
--json --topology netns`` on the client VM) passes when every delay ran and the client's
SYN_SENT time follows the RTT added: its "answer after" (from the SYN that was answered to
ESTABLISHED) rises with each delay, is at least the delay, and lies within the kernel's own
measured srtt of that socket (``SWEEP_SLACK``). Its whole stay in SYN_SENT is that answer plus
the hold (the lab's full accept queue drops SYNs until the server accepts: 1 s to the first
retransmission, 3 s when a slow VM accepts after it), so the duration is printed but only
required to contain the answer: the retransmission that gets through, not the RTT, decides it.

Standard library only: it runs with the host's python3.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

SS_NAMES = {
    "ESTABLISHED": "ESTAB",
    "SYN_SENT": "SYN-SENT",
    "SYN_RECV": "SYN-RECV",
    "FIN_WAIT1": "FIN-WAIT-1",
    "FIN_WAIT2": "FIN-WAIT-2",
    "TIME_WAIT": "TIME-WAIT",
    "CLOSE": "UNCONN",
    "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}
Seen = set[tuple[str, str, str]]


def parse_ss_log(text: str) -> Seen:
    """Every (ss state, local, peer) the sampler saw (``@`` lines are sample times)."""
    seen: Seen = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and not line.startswith("@"):
            seen.add((fields[0], fields[3], fields[4]))
    return seen


def vm_of(side: str) -> str:
    """Which VM a side's socket lives on: the listener and ``server*`` sides on the server."""
    return "server" if side == "listener" or side.startswith("server") else "client"


@dataclass
class Run:
    lab: str
    loop: str
    status: int
    seconds: float
    passed_steps: bool = False
    held: list[tuple[str, str, bool]] = field(default_factory=list)  # (vm, state, seen)
    problem: str = ""

    @property
    def confirmed(self) -> bool:
        return all(seen for _, _, seen in self.held)

    @property
    def passed(self) -> bool:
        return self.status == 0 and self.passed_steps and self.confirmed


def check_run(run: Run, events: list[dict[str, object]], seen: dict[str, Seen]) -> Run:
    """Fill in ``run`` from its events and the second readers' logs."""
    result = [e for e in events if e.get("event") == "result"]
    run.passed_steps = bool(result) and result[-1].get("passed") is True
    if not result:
        run.problem = "no result event"
    for event in events:
        if event.get("event") != "step":
            continue
        holds = event.get("holds")
        if not isinstance(holds, dict) or not any(
            isinstance(h, dict) and h.get("active") for h in holds.values()
        ):
            continue
        expected = event.get("expected")
        observed = event.get("observed")
        if not isinstance(expected, dict) or not isinstance(observed, dict):
            continue
        for side, state in expected.items():
            if state in {"ABSENT", "LISTEN"} or not isinstance(state, str):
                continue
            obs = observed.get(side)
            vm = vm_of(str(side))
            if not isinstance(obs, dict):
                run.held.append((vm, state, False))
                continue
            key = (SS_NAMES.get(state, state), str(obs.get("local")), str(obs.get("remote")))
            run.held.append((vm, state, key in seen.get(vm, set())))
    return run


def load(out: Path) -> list[Run]:
    seen = {
        vm: parse_ss_log(path.read_text(errors="replace")) if path.exists() else set()
        for vm in ("server", "client")
        for path in [out / f"ss.{vm}.log"]
    }
    runs = []
    for line in (out / "runs.tsv").read_text().splitlines():
        lab, loop, status, seconds = line.split("\t")
        run = Run(lab, loop, int(status), float(seconds))
        events = []
        jsonl = out / f"{lab}.{loop}.jsonl"
        for raw in jsonl.read_text(errors="replace").splitlines() if jsonl.exists() else []:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                events.append(item)
        runs.append(check_run(run, events, seen))
    return runs


def held_text(run: Run) -> str:
    if not run.held:
        return "-"
    states = []
    for vm, state, ok in run.held:
        name = f"{vm[0]}:{SS_NAMES.get(state, state)}" + ("" if ok else "(NOT SEEN)")
        if name not in states:
            states.append(name)
    count = sum(1 for *_, ok in run.held if ok)
    return f"{count}/{len(run.held)} " + " ".join(states)


def table(runs: list[Run]) -> str:
    lines = [f"{'lab':<19}{'loop':<8}{'result':<7}{'secs':>6}  held states seen by ss (s:/c: VM)"]
    for run in runs:
        result = "pass" if run.passed else f"FAIL({run.status})"
        lines.append(f"{run.lab:<19}{run.loop:<8}{result:<7}{run.seconds:>6.1f}  {held_text(run)}")
    passed = sum(run.passed for run in runs)
    lines.append(f"{passed}/{len(runs)} runs passed")
    return "\n".join(lines)


SWEEP_DELAYS = (0.0, 50.0, 200.0)
SWEEP_SLACK = (2.0, 0.1)
"""The answer may differ from the kernel's srtt by 2 ms or 10 % of it, whichever is more: the
srtt is a timestamp sample with 1 ms granularity."""


def check_sweep(doc: object, status: int) -> tuple[bool, list[str]]:
    """(passed, lines) for the sweep's JSON document (``render.sweep.sweep_json``)."""
    lines: list[str] = []
    problems: list[str] = []
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if status not in (0, 3) or not isinstance(runs, list):
        return False, [f"sweep: no result (exit {status})"]
    found: dict[float, tuple[float, float, float | None, float | None]] = {}
    for run in runs:
        if not isinstance(run, dict):
            continue
        delay = float(run.get("delay_ms", -1))
        spans = [
            s
            for s in run.get("states", [])
            if isinstance(s, dict) and s.get("side") == "client" and s.get("state") == "SYN_SENT"
        ]
        info = (run.get("measured") or {}).get("client") or {}
        if not spans or spans[0].get("duration_ms") is None or spans[0].get("answer_ms") is None:
            problems.append(f"+{delay:g} ms: no client SYN_SENT with a duration and an answer")
            continue
        duration, answer = float(spans[0]["duration_ms"]), float(spans[0]["answer_ms"])
        srtt, rto = info.get("rtt_ms"), info.get("rto_ms")
        found[delay] = (duration, answer, srtt, rto)
        verdict = "kernel agreed" if run.get("passed") else "kernel DISAGREED"
        lines.append(
            f"sweep +{delay:>3g} ms: client SYN_SENT {duration:8.1f} ms (hold "
            f"{duration - answer:.1f} + answer after {answer:.3f}), kernel srtt {srtt} ms "
            f"rto {rto} ms ({verdict})"
        )
        if duration < answer:
            problems.append(f"+{delay:g} ms: SYN_SENT lasted less than its answer took")
        if delay > 0:
            slack = max(SWEEP_SLACK[0], SWEEP_SLACK[1] * float(srtt or 0))
            if answer < delay:
                problems.append(f"+{delay:g} ms: answer {answer:g} ms is shorter than the delay")
            if srtt is None or abs(answer - float(srtt)) > slack:
                problems.append(
                    f"+{delay:g} ms: answer {answer:g} ms not within {slack:g} ms of srtt {srtt}"
                )
    missing = [d for d in SWEEP_DELAYS if d not in found]
    if missing:
        problems.append("no run at " + ", ".join(f"+{d:g} ms" for d in missing))
    answers = [found[d][1] for d in SWEEP_DELAYS if d in found]
    if any(b <= a for a, b in itertools.pairwise(answers)):
        problems.append(f"SYN_SENT answer after does not grow with the delay: {answers}")
    lines += [f"sweep PROBLEM: {p}" for p in problems]
    passed = not problems
    lines.append(f"sweep: {'pass' if passed else 'FAIL'}")
    return passed, lines


def load_sweep(out: Path) -> tuple[bool, list[str]] | None:
    """The sweep's check, or None when the check did not run one (HSLAB_SWEEP=0)."""
    rc_file = out / "sweep.rc"
    if not rc_file.exists():
        return None
    try:
        doc: object = json.loads((out / "sweep.json").read_text(errors="replace"))
    except (OSError, ValueError):
        doc = None
    return check_sweep(doc, int(rc_file.read_text().strip() or "1"))


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--sweep":  # run-all-labs.sh: vmcheck.py --sweep FILE RC
        try:
            doc: object = json.loads(Path(argv[2]).read_text(errors="replace"))
        except (OSError, ValueError):
            doc = None
        passed, lines = check_sweep(doc, int(argv[3]))
        print("\n".join(lines))
        return 0 if passed else 1
    out = Path(argv[1] if len(argv) > 1 else ".")
    runs = load(out)
    print(table(runs))
    swept = load_sweep(out)
    if swept is not None:
        print("\n".join(swept[1]))
    sweep_ok = swept is None or swept[0]
    return 0 if runs and all(run.passed for run in runs) and sweep_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
