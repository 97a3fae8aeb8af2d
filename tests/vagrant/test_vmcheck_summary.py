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


def sweep_doc(
    answers: tuple[float, ...] = (0.06, 50.1, 200.2),
    srtts: tuple[float, ...] = (1.0, 51.0, 201.0),
    durations: tuple[float, ...] = (1013.0, 1063.5, 1215.0),
    delays: tuple[float, ...] = (0.0, 50.0, 200.0),
) -> dict[str, object]:
    """The shape ``handshake-lab sweep --json`` prints (render/sweep.py)."""
    return {
        "format": "hslab-sweep/1",
        "lab": "handshake",
        "runs": [
            {
                "delay_ms": delay,
                "passed": True,
                "measured": {"client": {"rtt_ms": srtt, "rttvar_ms": srtt / 2, "rto_ms": 204.0}},
                "states": [
                    {"side": "server", "state": "SYN_RECV", "duration_ms": 0.1, "answer_ms": None},
                    {
                        "side": "client",
                        "state": "SYN_SENT",
                        "duration_ms": duration,
                        "answer_ms": answer,
                    },
                ],
            }
            for delay, answer, srtt, duration in zip(
                delays, answers, srtts, durations, strict=True
            )
        ],
    }


def test_the_sweep_passes_when_syn_sent_follows_the_rtt(vmcheck: ModuleType) -> None:
    passed, lines = vmcheck.check_sweep(sweep_doc(), 0)
    assert passed, lines
    # A slow VM accepted after the first retransmission at 0 and 50 ms: 3 s of hold there.
    slow = sweep_doc(
        durations=(3048.2, 3094.6, 1274.7), answers=(8.7, 53.9, 224.0), srtts=(9, 54, 221)
    )
    assert vmcheck.check_sweep(slow, 0)[0] is True, "the duration need not grow: the hold"
    assert lines[-1] == "sweep: pass"
    assert any(
        line.startswith("sweep +200 ms: client SYN_SENT   1215.0 ms (hold 1014.8 + answer after")
        for line in lines
    ), lines


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (sweep_doc(answers=(0.06, 50.1, 230.0)), "+200 ms: answer 230 ms not within"),
        (sweep_doc(answers=(0.06, 49.0, 200.2)), "+50 ms: answer 49 ms is shorter than"),
        (sweep_doc(answers=(0.06, 60.0, 55.0)), "answer after does not grow"),
        (sweep_doc(durations=(1013.0, 1063.5, 150.0)), "+200 ms: SYN_SENT lasted less than"),
        (
            sweep_doc(
                answers=(0.06, 50.1), srtts=(1.0, 51.0), durations=(1.0, 2.0), delays=(0, 50)
            ),
            "no run at +200 ms",
        ),
    ],
)
def test_the_sweep_fails_when_syn_sent_does_not_follow_the_rtt(
    vmcheck: ModuleType, doc: dict[str, object], problem: str
) -> None:
    passed, lines = vmcheck.check_sweep(doc, 0)
    assert not passed
    assert any(problem in line for line in lines), lines
    assert lines[-1] == "sweep: FAIL"


def test_a_sweep_that_did_not_run_fails_and_a_skipped_one_is_not_checked(
    vmcheck: ModuleType, tmp_path: Path
) -> None:
    assert vmcheck.load_sweep(tmp_path) is None, "HSLAB_SWEEP=0: no sweep.rc"
    (tmp_path / "sweep.rc").write_text("13\n")
    (tmp_path / "sweep.json").write_text("")
    assert vmcheck.load_sweep(tmp_path) == (False, ["sweep: no result (exit 13)"])


def test_vm_check_fails_on_the_sweep_even_when_every_lab_passed(
    vmcheck: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path)
    ss_logs(tmp_path, "LAST-ACK")
    (tmp_path / "sweep.rc").write_text("0\n")
    (tmp_path / "sweep.json").write_text(json.dumps(sweep_doc(answers=(0.06, 50.1, 20.0))))
    assert vmcheck.main(["vmcheck.py", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1/1 runs passed" in out
    assert "sweep: FAIL" in out
    (tmp_path / "sweep.json").write_text(json.dumps(sweep_doc()))
    assert vmcheck.main(["vmcheck.py", str(tmp_path)]) == 0
