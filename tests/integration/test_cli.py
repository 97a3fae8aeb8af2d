"""The command line as a user meets it: real processes, real exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.spec.loader import builtin_names, find_lab

CLI = [sys.executable, "-m", "handshake_lab"]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_list_prints_every_builtin_lab_grouped_by_level_in_course_order() -> None:
    proc = cli("list", env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip("\n").splitlines()
    listed = [line.split()[1] for line in lines if re.match(r"^ ?\d+ [a-z]", line)]
    assert sorted(listed) == builtin_names()
    assert [line for line in lines if line.startswith("Level ")] == [
        "Level 1: basics",
        "Level 2: teardown details",
        "Level 3: corner cases",
    ]
    assert all(len(line) <= 80 for line in lines)


def test_list_json_is_one_document_in_the_same_order() -> None:
    text = cli("list").stdout
    listed = [line.split()[1] for line in text.splitlines() if re.match(r"^ ?\d+ [a-z]", line)]
    proc = cli("list", "--json")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert [lab["name"] for lab in doc["labs"]] == listed
    assert [lab["order"] for lab in doc["labs"]] == list(range(1, len(listed) + 1))
    assert all(lab["states"] and lab["duration"] for lab in doc["labs"])


def test_list_in_chinese_shows_chinese_summaries() -> None:
    proc = cli("list", "--lang", "zh")
    assert proc.returncode == 0
    assert any("\u4e00" <= ch <= "\u9fff" for ch in proc.stdout)


@pytest.mark.parametrize("topic", ["FIN_WAIT2", "fin-wait-2", "TIME-WAIT", "ESTAB", "closed"])
def test_explain_state_accepts_every_spelling(topic: str) -> None:
    proc = cli("explain", topic)
    assert proc.returncode == 0, proc.stderr
    assert "RFC 9293" in proc.stdout
    assert "-->" in proc.stdout  # transitions generated from the state machine's table


def test_explain_lab_prints_every_step() -> None:
    proc = cli("explain", "half-close", "--lang", "zh")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    steps = find_lab("half-close").steps
    assert len(steps) > 5
    for step in steps:  # each step's heading, in order, each followed by its text
        heading = f"{step.index}. {step.actor}: {step.action} ({step.id})"
        assert heading in lines, heading
        after = lines[lines.index(heading) + 1]
        assert after.strip(), f"no explanation under {heading}"
    indices = [lines.index(f"{s.index}. {s.actor}: {s.action} ({s.id})") for s in steps]
    assert indices == sorted(indices)
    assert "SHUT_WR" in proc.stdout


def test_explain_unknown_topic_suggests_and_exits_lab_not_found() -> None:
    proc = cli("explain", "FIN_WAIT3")
    assert proc.returncode == ExitStatus.LAB_NOT_FOUND
    assert "did you mean" in one_error_line(proc)


def test_run_json_is_ndjson_with_lab_steps_and_result() -> None:
    proc = cli("run", "half-close", "--json", "--loop", "uvloop")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(e["schema"] == 1 for e in events)
    assert events[0]["event"] == "lab"
    assert events[0]["loop"] == "uvloop"
    assert events[-1]["event"] == "result"
    assert events[-1]["passed"] is True
    steps = [e for e in events if e["event"] == "step"]
    assert [s["index"] for s in steps] == list(range(1, len(steps) + 1))
    last = steps[-1]
    client = last["observed"]["client"]
    assert client["state"] == "TIME_WAIT"
    assert client["sources"] == {"ss": "TIME-WAIT", "psutil": "TIME_WAIT"}
    assert 0 < client["timer"]["remaining"] <= 60
    assert any(s["data"] for s in steps if s["actor"] == "client" and s["action"] == "recv")


def test_unknown_lab_exits_5_with_suggestion() -> None:
    proc = cli("run", "half-clos")
    assert proc.returncode == ExitStatus.LAB_NOT_FOUND
    assert "did you mean half-close" in one_error_line(proc)


def test_malformed_lab_file_exits_4_naming_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[step]\n')
    proc = cli("run", str(bad))
    assert proc.returncode == ExitStatus.LAB_INVALID
    assert str(bad) in one_error_line(proc)


def test_missing_lab_file_exits_5(tmp_path: Path) -> None:
    proc = cli("run", str(tmp_path / "absent.toml"))
    assert proc.returncode == ExitStatus.LAB_NOT_FOUND
    assert "no such lab file" in one_error_line(proc)


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "0"],
        ["--port", "65536"],
        ["--port", "-1"],
        ["--port", "http"],
        ["--loop", "trio"],
        ["--lang", "fr"],
        ["--topology", "mars"],
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str]) -> None:
    proc = cli("run", "half-close", *args)
    assert proc.returncode == ExitStatus.USAGE
    assert "Traceback" not in proc.stderr


def test_busy_port_is_a_network_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = cli("run", "half-close", "--port", str(port))
    assert proc.returncode == ExitStatus.NETWORK_ERROR
    assert f"port {port} is in use" in one_error_line(proc)


def test_missing_ss_says_which_package_provides_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "HSLAB_SYSTEM_DIRS": ""}
    proc = cli("run", "half-close", env=env)
    assert proc.returncode == ExitStatus.MISSING_DEPENDENCY
    assert "iproute2" in one_error_line(proc)


def test_nft_outside_path_is_found_and_a_really_missing_one_refused_before_step_1() -> None:
    """A Debian user's PATH (no /usr/sbin): nft is looked for in the system directories too.
    With those emptied (as on a machine without nftables) the netns lab that holds segments
    is refused before anything is built: one line naming the package, exit 6, no event."""
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HSLAB_SYSTEM_DIRS": ""}
    proc = cli("run", "lost-last-ack", "--topology", "netns", "--json", env=env)
    assert proc.returncode == ExitStatus.MISSING_DEPENDENCY, proc.stderr
    line = one_error_line(proc)
    assert "nft not found" in line, line
    assert "apt install nftables" in line, line
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("/nonexistent/x.pcap", "directory /nonexistent does not exist"),
        ("/proc/x.pcap", "cannot create a file in /proc"),
        ("{tmp}/link.pcap", "symbolic link"),
    ],
    ids=["missing-directory", "read-only-place", "symlink"],
)
def test_an_unwritable_pcap_path_exits_9_before_step_1(
    tmp_path: Path, where: str, words: str
) -> None:
    (tmp_path / "link.pcap").symlink_to(tmp_path / "victim")
    path = where.format(tmp=tmp_path)
    proc = cli("run", "reset", "--json", "--pcap", path)
    assert proc.returncode == ExitStatus.OUTPUT_UNWRITABLE, proc.stderr
    line = one_error_line(proc)
    assert line.startswith(f"handshake-lab: {path}: "), line
    assert words in line, line
    assert proc.stdout == "", "refused before the lab started: no event at all"
    assert not (tmp_path / "victim").exists()


@pytest.mark.root
def test_a_pcap_write_error_after_the_run_is_one_line_and_exit_9() -> None:
    """/dev/full takes the open and refuses the bytes: the lab ran, the file could not be."""
    proc = cli("run", "reset", "--json", "--pcap", "/dev/full")
    assert proc.returncode == ExitStatus.OUTPUT_UNWRITABLE, proc.stderr
    assert one_error_line(proc) == (
        "handshake-lab: /dev/full: cannot write: No space left on device"
    )
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "result"


@pytest.mark.root
def test_an_existing_pcap_is_replaced_whole_and_said(tmp_path: Path) -> None:
    target = tmp_path / "run.pcap"
    target.write_bytes(b"an older capture")
    proc = cli("run", "reset", "--json", "--pcap", str(target))
    assert proc.returncode == ExitStatus.OK, proc.stderr
    assert f"handshake-lab: replaced the existing file {target}" in proc.stderr.splitlines()
    assert target.read_bytes()[:4] in {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.pcap"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("= nope")
    proc = cli("run", str(bad), "--debug")
    assert proc.returncode == ExitStatus.LAB_INVALID
    assert "Traceback" in proc.stderr


def test_disagreeing_kernel_exits_3(tmp_path: Path) -> None:
    lab = tmp_path / "wrong.toml"
    lab.write_text(
        """
name = "wrong"
title = {en = "wrong on purpose"}
summary = {en = "expects LISTEN to be ESTABLISHED"}
[[step]]
actor = "server"
action = "listen"
expect = {listener = "ESTABLISHED"}
timeout = 0.2
explain = {en = "A listener is never ESTABLISHED."}
"""
    )
    proc = cli("run", str(lab), "--json")
    assert proc.returncode == ExitStatus.KERNEL_DISAGREED
    step = json.loads(proc.stdout.splitlines()[1])
    assert step["agrees"] is False
    assert step["observed"]["listener"]["state"] == "LISTEN"
    assert step["mismatches"] == ["listener: expected ESTABLISHED, kernel says LISTEN"]


HANGING_LAB = """
name = "hang"
title = {en = "waits for a state that never comes"}
summary = {en = "for interrupt tests"}
[[step]]
actor = "server"
action = "listen"
expect = {listener = "LISTEN"}
explain = {en = "listen"}
[[step]]
actor = "client"
action = "connect"
expect = {client = "ESTABLISHED"}
explain = {en = "connect"}
[[step]]
action = "observe"
expect = {client = "CLOSING"}
timeout = 60
explain = {en = "never happens"}
"""


def _tcp_sockets_on(port: int) -> list[str]:
    out = subprocess.run(
        ["ss", "-tanH", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def _default_sigint() -> None:
    # A shell's "cmd &" starts children with SIGINT ignored, and Python then keeps it ignored
    # (as it should). The test wants what a user at a terminal gets: the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_closes_every_socket_and_exits_130(tmp_path: Path, sig: signal.Signals) -> None:
    lab = tmp_path / "hang.toml"
    lab.write_text(HANGING_LAB)
    with subprocess.Popen(
        [*CLI, "run", str(lab), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads in the child before exec
    ) as proc:
        try:
            assert proc.stdout is not None
            header = json.loads(proc.stdout.readline())
            port = header["ports"]["main"]
            for _ in range(2):  # listen and connect steps have been reported
                assert json.loads(proc.stdout.readline())["event"] == "step"
            assert any("LISTEN" in line for line in _tcp_sockets_on(port))
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == ExitStatus.INTERRUPTED, err
    assert "Traceback" not in err
    # Cleanup aborts connections (RST), so no listener, no ESTABLISHED, no TIME_WAIT is left.
    deadline = time.monotonic() + 5
    while _tcp_sockets_on(port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _tcp_sockets_on(port) == []


def test_missing_uvloop_is_exit_6_with_the_fix(tmp_path: Path) -> None:
    # A directory first on sys.path whose uvloop package fails to import.
    shadow = tmp_path / "uvloop"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no uvloop here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    proc = cli("run", "half-close", "--loop", "uvloop", env=env)
    assert proc.returncode == ExitStatus.MISSING_DEPENDENCY
    assert "pip install uvloop" in one_error_line(proc)


def test_explain_a_name_that_is_both_a_state_and_a_lab_says_so_and_how_to_pick() -> None:
    proc = cli("explain", "close")
    assert proc.returncode == 0
    assert proc.stdout.startswith("CLOSE (RFC 9293: CLOSED)")  # as before: the state
    note = one_error_line(proc)
    assert "both the state CLOSE and the lab close" in note
    assert "explain state close" in note
    assert "explain lab close" in note
    lab = cli("explain", "lab", "close")
    assert lab.returncode == 0
    assert lab.stderr == ""
    assert lab.stdout.startswith("close - ")
    state = cli("explain", "state", "close")
    assert state.returncode == 0
    assert state.stderr == ""
    assert state.stdout == proc.stdout
    assert cli("explain", "half-close").stderr == ""  # a lab only: no note


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("state", "half-close"), ExitStatus.LAB_NOT_FOUND),
        (("lab", "FIN_WAIT2"), ExitStatus.LAB_NOT_FOUND),
        (("thing", "close"), ExitStatus.USAGE),
    ],
)
def test_explain_with_a_kind_takes_only_that_kind(args: tuple[str, str], status: int) -> None:
    proc = cli("explain", *args)
    assert proc.returncode == status
    one_error_line(proc)


def test_bash_completion_completes_commands_options_and_lab_names(tmp_path: Path) -> None:
    script = cli("--show-completion", "bash")
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _handshake_lab_completion handshake-lab" in script.stdout
    (tmp_path / "completion.sh").write_text(script.stdout)
    # The function calls the program by name: a stand-in on PATH runs this interpreter.
    shim = tmp_path / "handshake-lab"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m handshake_lab "$@"\n')
    shim.chmod(0o755)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        program = (
            f". {tmp_path}/completion.sh; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
            '_handshake_lab_completion handshake-lab; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
        out = subprocess.run(
            ["bash", "-c", program], capture_output=True, text=True, env=env, check=False
        )
        return out.stdout.split()

    assert complete("handshake-lab", "ru") == ["run"]
    assert complete("handshake-lab", "lab", "") == ["check", "new"]
    assert complete("handshake-lab", "run", "half") == ["half-close"]
    assert complete("handshake-lab", "explain", "clos") == ["close", "close-wait-leak"]
    assert complete("handshake-lab", "explain", "CLOS") == ["CLOSE", "CLOSE_WAIT", "CLOSING"]
    assert complete("handshake-lab", "explain", "sta") == ["state", "stale-syn"]
    assert complete("handshake-lab", "run", "--topology", "") == [
        "loopback",
        "netns",
        "netns-agent",
    ]


def test_install_completion_writes_to_the_users_shell_files_only(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    proc = cli("--install-completion", "bash", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        "_handshake_lab_completion"
        in (tmp_path / ".bash_completions/handshake-lab.sh").read_text()
    )
    assert "handshake-lab.sh" in (tmp_path / ".bashrc").read_text()
