"""Writing a lab as a teacher does: ``lab new``, ``lab check``, then ``run`` on real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from handshake_lab.errors import ExitStatus

CLI = [sys.executable, "-m", "handshake_lab"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def test_lab_new_writes_a_template_that_checks_and_runs(tmp_path: Path) -> None:
    made = cli("lab", "new", "demo", cwd=tmp_path)
    assert made.returncode == ExitStatus.OK, made.stderr
    assert (tmp_path / "demo.toml").is_file()
    checked = cli("lab", "check", "demo.toml", cwd=tmp_path)
    assert checked.returncode == ExitStatus.OK, checked.stdout
    assert checked.stdout.startswith("demo.toml: ok (demo, 4 steps")
    ran = cli("run", "demo.toml", "--json", "--topology", "loopback", cwd=tmp_path)
    assert ran.returncode == ExitStatus.OK, ran.stdout[-2000:] + ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert events[0]["name"] == "demo"
    assert [e["agrees"] for e in events if e["event"] == "step"] == [True] * 4


def test_lab_new_never_replaces_a_file(tmp_path: Path) -> None:
    mine = tmp_path / "demo.toml"
    mine.write_text("my own lab\n")
    proc = cli("lab", "new", "demo", cwd=tmp_path)
    assert proc.returncode == ExitStatus.OUTPUT_UNWRITABLE
    assert "already exists" in proc.stderr
    assert mine.read_text() == "my own lab\n"
    (tmp_path / "link.toml").symlink_to(tmp_path / "elsewhere.toml")
    proc = cli("lab", "new", "link", cwd=tmp_path)
    assert proc.returncode == ExitStatus.OUTPUT_UNWRITABLE
    assert not (tmp_path / "elsewhere.toml").exists()
    proc = cli("lab", "new", "no/such/dir/x", cwd=tmp_path)
    assert proc.returncode == ExitStatus.OUTPUT_UNWRITABLE
    proc = cli("lab", "new", "My Lab", cwd=tmp_path)
    assert proc.returncode == ExitStatus.USAGE
    assert not list(tmp_path.glob("My*"))


def test_lab_check_reports_every_broken_step_with_lines_and_json(tmp_path: Path) -> None:
    assert cli("lab", "new", "demo", cwd=tmp_path).returncode == 0
    text = (tmp_path / "demo.toml").read_text(encoding="utf-8")
    broken = text.replace('action = "connect"', 'action = "conect"').replace(
        'server = "ABSENT"', 'server = "GONE"'
    )
    (tmp_path / "broken.toml").write_text(broken, encoding="utf-8")
    lines = broken.splitlines()
    proc = cli("lab", "check", "broken.toml", "demo.toml", "absent.toml", cwd=tmp_path)
    assert proc.returncode == ExitStatus.LAB_INVALID
    out = proc.stdout.splitlines()
    connect_line = lines.index('action = "conect"') + 1
    gone_line = next(i for i, line in enumerate(lines, 1) if '"GONE"' in line)
    assert out[0].startswith(f"broken.toml:{connect_line}: step 2 (connect): unknown action")
    assert out[1].startswith(f"broken.toml:{gone_line}: step 4 (server-close): unknown state")
    assert out[2].startswith("demo.toml: ok")
    assert out[3] == "absent.toml: no such lab file"
    doc = json.loads(cli("lab", "check", "--json", "broken.toml", cwd=tmp_path).stdout)
    (entry,) = doc["files"]
    assert [(p["line"], p["step"], p["step_id"]) for p in entry["problems"]] == [
        (connect_line, 2, "connect"),
        (gone_line, 4, "server-close"),
    ]
    assert doc["exit"] == ExitStatus.LAB_INVALID


def test_lab_check_on_a_missing_file_alone_is_exit_5(tmp_path: Path) -> None:
    proc = cli("lab", "check", "nope.toml", cwd=tmp_path)
    assert proc.returncode == ExitStatus.LAB_NOT_FOUND
