"""``play`` on real loopback sockets: a typed session shows what the half-close lab shows, a
saved session re-runs agreeing at every step, and a bad command costs one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from handshake_lab.placement import Topology
from handshake_lab.record.events import LabResult, StepReport
from handshake_lab.spec.authoring import check_file
from handshake_lab.spec.loader import load_lab
from handshake_lab.tcp.states import TcpState
from tests.integration.play_support import HALF_CLOSE, play_lines, rerun, states

CLI = [sys.executable, "-m", "handshake_lab"]


def check_half_close(steps: list[StepReport]) -> None:
    """The half-close lab's evidence, read from the steps of ``HALF_CLOSE`` (play's own
    opening listen left out)."""
    (connect, hello, shutdown, read, eof, sent, received, server_close, client_close) = steps
    assert states(connect) == {
        "listener": "LISTEN",
        "client": "ESTABLISHED",
        "server": "ESTABLISHED",
    }
    assert hello.outcome == "ok"
    assert states(shutdown)["client"] == "FIN_WAIT2"
    assert states(shutdown)["server"] == "CLOSE_WAIT"
    assert (read.outcome, read.data) == ("data", "hello")
    assert eof.outcome == "EOF"
    assert sent.outcome == "ok"
    assert states(sent)["server"] == "CLOSE_WAIT"
    assert (received.outcome, received.data) == ("data", "data after FIN")  # still flowing
    assert states(received)["client"] == "FIN_WAIT2"
    assert states(server_close)["client"] == "TIME_WAIT"
    assert states(server_close)["server"] == "ABSENT"
    assert states(client_close)["client"] == "TIME_WAIT"
    assert all(s.agrees for s in steps), [s.mismatches for s in steps]


def test_a_typed_half_close_shows_what_the_half_close_lab_shows(loop_name: str) -> None:
    session = play_lines(HALF_CLOSE, loop_name)
    assert len(session.steps) == len(HALF_CLOSE) + 1
    check_half_close(session.steps[1:])
    assert session.steps[0].action == "listen"
    assert states(session.steps[0])["listener"] == "LISTEN"
    # The prediction is the expectation, labelled as the model's, with the kernel's verdict.
    shutdown = session.steps[3]
    assert shutdown.action == "send_eof"
    assert shutdown.expected == {
        "listener": "LISTEN",
        "client": "FIN_WAIT2",
        "server": "CLOSE_WAIT",
    }
    assert shutdown.explanation["en"].startswith("Model (RFC 9293 table, not the kernel):")
    assert "Kernel agrees with the model." in shutdown.explanation["en"]
    assert "Now FIN_WAIT2: client. The active closer" in shutdown.explanation["en"]
    assert "Now CLOSE_WAIT: server. " in shutdown.explanation["en"]
    assert "模型" in shutdown.explanation["zh"]
    result = session.events[-1]
    assert isinstance(result, LabResult)
    assert result.passed


def test_a_saved_session_passes_lab_check_and_reruns_agreeing_at_every_step(
    loop_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "typed-half-close.toml"
    session = play_lines([*HALF_CLOSE, f"save {path}"], loop_name)
    assert any(f"saved 10 steps to {path}" in line for line in session.said), session.said
    checked = check_file(str(path))  # what 'handshake-lab lab check' says of it
    assert checked.problems == []
    lab = load_lab(path)
    assert lab.name == "typed-half-close"
    assert [s.action for s in lab.steps] == [s.action for s in session.steps]
    assert lab.steps[3].expect == {
        "listener": TcpState.LISTEN,
        "client": TcpState.FIN_WAIT2,
        "server": TcpState.CLOSE_WAIT,
    }  # the states the kernel showed are the expectations
    assert "TODO (teacher)" in lab.steps[2].explain.en  # a send changes no state
    assert "待补充" in lab.steps[2].explain.zh
    assert lab.steps[3].action == "send_eof"
    assert lab.steps[3].explain.en.startswith("client: FIN_WAIT2. ")  # the built-in text
    for loop in ("asyncio", "uvloop"):
        record = rerun(lab, loop, Topology.LOOPBACK)
        assert record.result is not None
        assert record.result.passed, [s.mismatches for s in record.steps]
        assert len(record.steps) == len(session.steps)
        for played, again in zip(session.steps, record.steps, strict=True):
            assert states(again) == states(played), again.id


def test_a_disagreement_is_shown_not_an_error(tmp_path: Path) -> None:
    """Connecting with no listener: the model expects the RST (client gone); whatever the
    kernel says is an observation, and the session goes on to the end."""
    session = play_lines(["unlisten", "connect", "listen", "connect"])
    refused = session.steps[2]
    assert refused.outcome == "ECONNREFUSED"
    assert refused.agrees, refused.mismatches  # an errno is the command's outcome, not a miss
    assert states(refused)["client"] == "ABSENT"
    assert session.steps[-1].outcome == "EISCONN"  # one connection per session: said in help
    assert isinstance(session.events[-1], LabResult)


def test_a_bad_command_is_one_line_and_the_session_goes_on() -> None:
    session = play_lines(["frobnicate now", "connect", "recv", "close client"])
    assert len(session.said) == 2, session.said
    assert session.said[0].startswith("play: unknown command 'frobnicate'; commands: connect,")
    assert session.said[1] == "play: recv needs an end: recv client|server"
    assert [s.action for s in session.steps] == ["listen", "connect", "close"]
    assert all(s.agrees for s in session.steps)


def test_a_save_that_cannot_be_written_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    link = tmp_path / "link.toml"
    link.symlink_to(tmp_path / "elsewhere.toml")
    missing = tmp_path / "no-such-dir" / "lab.toml"
    early = tmp_path / "early.toml"
    session = play_lines([f"save {early}", "connect", f"save {missing}", f"save {link}"])
    assert session.said == [
        f"play: saved 1 step to {early} (handshake-lab run {early})",
        f"play: save: {missing}: directory {missing.parent} does not exist",
        f"play: save: {link}: is a symbolic link; refusing to write through it",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early.toml", "link.toml"]


def test_holds_are_refused_on_loopback_in_one_line() -> None:
    session = play_lines(["drop next fin from client", "hold hold_fin at server", "connect"])
    assert (
        session.said
        == ["play: holds are nftables rules in namespaces: start play --topology netns"] * 2
    )
    assert [s.action for s in session.steps] == ["listen", "connect"]


def test_piped_commands_are_echoed_and_the_session_ends_at_eof(loop_name: str) -> None:
    script = "connect\nbogus\nshutdown client\nhistory\nquit\nsend client zzqq\n"
    done = subprocess.run(
        [*CLI, "play", "--loop", loop_name],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "play> connect" in out
    assert out.index("play> connect") < out.index("Step 2/2  client: connect")
    assert "play: unknown command 'bogus'" in out
    assert "FIN-WAIT-2 / FIN_WAIT2" in out
    assert "   1  connect\n   2  bogus\n   3  shutdown client" not in out  # bad lines: not run
    assert "   1  connect\n   2  shutdown client" in out
    assert "zzqq" not in out  # quit ended it
    assert done.stderr == ""


def test_json_mode_keeps_stdout_for_events(tmp_path: Path) -> None:
    script = tmp_path / "cmds.txt"
    script.write_text("connect\nclose client\n", encoding="utf-8")
    saved = tmp_path / "run.jsonl"
    done = subprocess.run(
        [*CLI, "play", "--json", "--script", str(script), "--save", str(saved)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('{"event": "lab"') or '"event"' in lines[0]
    assert "play> connect" in done.stderr
    assert saved.read_text(encoding="utf-8") == done.stdout
    shown = subprocess.run(
        [*CLI, "show", str(saved)], capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "client: close" in shown.stdout
