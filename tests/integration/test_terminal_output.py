"""The terminal output as a user gets it from the command: its width (COLUMNS, a pipe, a
terminal), no trailing spaces, long payloads abbreviated, and the progress line of a long
step, on a terminal only (a pty here) and never in --json."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from rich.cells import cell_len

CLI = [sys.executable, "-m", "handshake_lab"]
CJK_START, CJK_END = "\u4e00", "\u9fff"


def cli(args: list[str], columns: int | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def widths(text: str) -> list[int]:
    return [cell_len(line) for line in text.splitlines()]


def trailing(text: str) -> list[str]:
    return [line for line in text.splitlines() if line != line.rstrip()]


@pytest.fixture(scope="module")
def half_close_zh(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One Chinese run of half-close at 80 columns, saved for 'show'."""
    saved = tmp_path_factory.mktemp("term") / "half-close-zh.jsonl"
    proc = cli(["run", "half-close", "--lang", "zh", "--save", str(saved)], 80)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, saved


def test_half_close_in_chinese_fits_80_columns(half_close_zh: tuple[str, Path]) -> None:
    out, _ = half_close_zh
    assert any(CJK_START <= ch <= CJK_END for ch in out)
    assert max(widths(out)) <= 80
    assert not trailing(out)
    # The Chinese explanations wrap (they have no spaces to break at): long lines of them.
    assert sum(1 for w in widths(out) if w >= 70) > 10


def test_half_close_in_english_fits_80_columns_and_uses_120() -> None:
    narrow = cli(["run", "half-close", "--lang", "en"], 80)
    assert narrow.returncode == 0, narrow.stderr
    assert max(widths(narrow.stdout)) <= 80
    assert not trailing(narrow.stdout)
    assert narrow.stderr == ""  # no terminal: no progress line, nothing at all
    assert "Why: " in narrow.stdout


def test_show_uses_the_width_it_is_given_and_80_in_a_pipe(
    half_close_zh: tuple[str, Path],
) -> None:
    _, saved = half_close_zh
    wide = cli(["show", str(saved)], 120)
    assert wide.returncode == 0, wide.stderr
    assert 80 < max(widths(wide.stdout)) <= 120
    assert not trailing(wide.stdout)
    # The explanations themselves use the width (at most PROSE_MAX = 100 columns).
    why = [line for line in wide.stdout.splitlines() if line.startswith("  原因")]
    assert why
    assert max(cell_len(line) for line in why) > 80
    piped = cli(["show", str(saved)], None)
    assert piped.returncode == 0, piped.stderr
    assert max(widths(piped.stdout)) <= 80
    assert not trailing(piped.stdout)


def test_a_long_payload_is_abbreviated_with_its_length(tmp_path: Path) -> None:
    payload = ("hello world " * 8534)[:102400]
    lab = tmp_path / "big.toml"
    lab.write_text(
        BIG_LAB.replace("PAYLOAD", payload),
        encoding="utf-8",
    )
    saved = tmp_path / "big.jsonl"
    proc = cli(["run", str(lab), "--save", str(saved)], 80)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "'hello world hello world hello world hell…' (102400 bytes)" in proc.stdout
    assert len(proc.stdout) < 20_000  # not the 100 KB twice
    assert max(widths(proc.stdout)) <= 80
    assert payload in saved.read_text(encoding="utf-8")  # the record keeps it whole


BIG_LAB = """
schema = 1
name = "hslab-big-data"
title = { en = "One send of 100 KB", zh = "一次发送 100 KB" }
summary = { en = "one send of 100 KB", zh = "一次发送 100 KB" }
echo = false

[[step]]
id = "listen"
actor = "server"
action = "listen"
outcome = "ok"
expect = { listener = "LISTEN" }
explain = { en = "Listen.", zh = "监听。" }

[[step]]
id = "connect"
actor = "client"
action = "connect"
outcome = "ok"
expect = { client = "ESTABLISHED", server = "ESTABLISHED" }
explain = { en = "Connect.", zh = "连接。" }

[[step]]
id = "send"
actor = "client"
action = "send"
args = { data = "PAYLOAD" }
outcome = "ok"
expect = { client = "ESTABLISHED", server = "ESTABLISHED" }
explain = { en = "Send 100 KB.", zh = "发送 100 KB。" }

[[step]]
id = "recv"
actor = "server"
action = "recv"
outcome = "data"
data = "PAYLOAD"
expect = { client = "ESTABLISHED", server = "ESTABLISHED" }
explain = { en = "Receive them.", zh = "接收。" }
"""

HOLD_LAB = """
schema = 1
name = "hslab-hold"
title = { en = "A step that waits", zh = "一个要等的步骤" }
summary = { en = "LISTEN must hold for a while", zh = "LISTEN 须保持一会儿" }

[[step]]
id = "listen"
actor = "server"
action = "listen"
outcome = "ok"
expect = { listener = "LISTEN" }
explain = { en = "Listen.", zh = "监听。" }

[[step]]
id = "hold"
actor = "lab"
action = "observe"
stay = 1.2
timeout = 3.0
expect = { listener = "LISTEN" }
explain = { en = "The listener stays.", zh = "监听者保持不变。" }
"""


PROMPT_ENDS = ("? ", "？ ")


def on_a_terminal(
    args: list[str],
    columns: int = 100,
    *,
    answers: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Run the command with stdin, stdout and stderr on a pty of ``columns`` columns; return
    its exit status and everything it wrote, as the terminal received it. With ``answers``,
    each prompt (output ending in "? ") is answered in turn, the last answer repeating."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    full_env.pop("NO_COLOR", None)
    full_env.update(env or {})
    proc = subprocess.Popen([*CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=full_env)
    os.close(slave)
    seen = b""
    asked = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if answers and seen.decode("utf-8", "replace").endswith(PROMPT_ENDS):
                os.write(master, (answers[min(asked, len(answers) - 1)] + "\n").encode())
                asked += 1
        status = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, seen.decode("utf-8", "replace")


def test_a_waiting_step_shows_a_progress_line_on_a_terminal_and_erases_it(
    tmp_path: Path,
) -> None:
    lab = tmp_path / "hold.toml"
    lab.write_text(HOLD_LAB, encoding="utf-8")
    status, seen = on_a_terminal(["run", str(lab)])
    assert status == 0, seen
    redraws = [part for part in seen.split("\r") if "waiting for the kernel" in part]
    assert len(redraws) >= 3, seen  # redrawn in place while the step held
    assert "Step 2/2 lab: observe: waiting for the kernel" in redraws[0]
    assert "must hold 1.2 s, timeout 3 s" in redraws[0]
    # Erased before the step's report is printed: the report starts on a clean line.
    last = seen.rindex("waiting for the kernel")
    report = seen.index("Step 2/2", last)
    assert "\r\x1b[K" in seen[last:report]
    # A step that settles at once (step 1) never shows a line.
    assert "Step 1/2 server: listen: waiting" not in seen


def test_no_progress_line_in_json_even_on_a_terminal(tmp_path: Path) -> None:
    lab = tmp_path / "hold.toml"
    lab.write_text(HOLD_LAB, encoding="utf-8")
    status, seen = on_a_terminal(["run", str(lab), "--json"])
    assert status == 0, seen
    assert "waiting" not in seen
    assert "\r\x1b[K" not in seen
    lines = [line for line in seen.replace("\r\n", "\n").splitlines() if line]
    assert all(line.startswith("{") for line in lines), lines[:3]
