"""``make vm-check``'s summary (vagrant/vmcheck.py), on made-up run files: no VM needed.

A run passes only when handshake-lab passed AND the second reader (ss on the VM) saw every
state a held step expected, on the same 4-tuple.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "vagrant" / "vmcheck.py"


@pytest.fixture(scope="module")
def vmcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vmcheck", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vmcheck"] = module
    spec.loader.exec_module(module)
    return module


C, S = "198.18.1.11:40001", "198.18.1.10:5000"


def write_run(out: Path, *, passed: bool = True) -> None:
    step = {
        "event": "step",
        "expected": {"client": "TIME_WAIT", "server": "LAST_ACK", "listener": "LISTEN"},
        "observed": {
            "client": {"local": C, "remote": S},
            "server": {"local": S, "remote": C},
            "listener": {"local": S, "remote": None},
        },
        "holds": {"lastack": {"active": True, "dropped": 1}},
    }
    unheld = step | {"holds": {}, "expected": {"client": "CLOSING"}}
    events = [{"event": "lab"}, step, unheld, {"event": "result", "passed": passed}]
    (out / "lost-last-ack.asyncio.jsonl").write_text(
        "\n".join(json.dumps(e) for e in events) + "\n"
    )
    (out / "runs.tsv").write_text(f"lost-last-ack\tasyncio\t{0 if passed else 3}\t9.5\n")


def ss_logs(out: Path, server_state: str) -> None:
    (out / "ss.client.log").write_text(f"@ 1.0\nTIME-WAIT 0 0 {C} {S}\n")
    (out / "ss.server.log").write_text(
        f"@ 1.0\nLISTEN 0 16 {S} 0.0.0.0:*\n{server_state} 0 1 {S} {C}\n"
    )


def test_a_run_passes_when_ss_saw_every_held_state(vmcheck: ModuleType, tmp_path: Path) -> None:
    write_run(tmp_path)
    ss_logs(tmp_path, "LAST-ACK")
    (run,) = vmcheck.load(tmp_path)
    assert run.passed
    assert sorted(run.held) == [("client", "TIME_WAIT", True), ("server", "LAST_ACK", True)]
    assert "2/2" in vmcheck.table([run])
    assert "1/1 runs passed" in vmcheck.table([run])


def test_a_held_state_the_second_reader_missed_fails_the_run(
    vmcheck: ModuleType, tmp_path: Path
) -> None:
    write_run(tmp_path)
    ss_logs(tmp_path, "FIN-WAIT-1")  # ss saw something else on that 4-tuple
    (run,) = vmcheck.load(tmp_path)
    assert not run.passed
    assert "s:LAST-ACK(NOT SEEN)" in vmcheck.held_text(run)
    assert vmcheck.main(["vmcheck", str(tmp_path)]) == 1


def test_a_failed_lab_fails_whatever_ss_saw(vmcheck: ModuleType, tmp_path: Path) -> None:
    write_run(tmp_path, passed=False)
    ss_logs(tmp_path, "LAST-ACK")
    (run,) = vmcheck.load(tmp_path)
    assert not run.passed
    assert "FAIL(3)" in vmcheck.table([run])
