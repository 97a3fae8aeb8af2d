"""The summary of ``make vm-check``: lab x loop, pass/fail, seconds, held states seen by ss.

Reads the directory ``vagrant/vm-check.sh`` filled: ``runs.tsv`` (lab, loop, exit status,
seconds), ``LAB.LOOP.jsonl`` (the run's NDJSON events, from the client VM) and
``ss.server.log`` / ``ss.client.log`` (what ``vagrant/ss-sampler.sh``, a second reader, saw on
each VM). A *held step* is a step reported while one of the run's nft holds was active; each
state it expected (other than ABSENT and LISTEN) must also appear in that VM's ss log on the
same 4-tuple, or the run fails even if handshake-lab said the kernel agreed.

Standard library only: it runs with the host's python3.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else ".")
    runs = load(out)
    print(table(runs))
    return 0 if runs and all(run.passed for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
