"""Hostile lab files through the real command line: one stderr line naming the file, exit 4
(5 for a path that does not exist), no traceback, and no namespace made before the error.

The loader's own fuzzing (hypothesis TOML) is in ``tests/unit/test_lab_loader.py``; this file is
about what a person can point ``run`` at: huge, deep, wrong, or not a file at all. The labs are
``topologies = ["netns"]`` where that matters, so a run that got past the loader would build
namespaces: ``ip netns list`` must show none of the run's (named after its pid).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from handshake_lab.errors import ExitStatus
from tests.faults.support import CLI, netns_names

BASE = """\
name = "hostile"
title = {en = "hostile"}
summary = {en = "hostile input"}
topologies = ["netns"]
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
"""

LOOPBACK_BASE = BASE.replace('topologies = ["netns"]', 'topologies = ["loopback"]')


def _step(extra: str) -> str:
    """BASE with ``extra`` lines added to its second step."""
    return BASE + extra + "\n"


def _sysctl_step(key: object) -> str:
    """BASE with a third step that sets the client's sysctl ``key``."""
    shown = f'"{key}"' if isinstance(key, str) else str(key)
    return (
        BASE
        + '[[step]]\nactor = "client"\naction = "sysctl"\n'
        + f'args = {{key = {shown}, value = 1}}\nexplain = {{en = "x"}}\n'
    )


# name -> (file contents, words the error must contain: each one says what was wrong)
CONTENTS: dict[str, tuple[bytes, str]] = {
    "huge": (b"# " + b"x" * (1 << 20) + b"\n" + BASE.encode(), "1 MiB"),
    "deep-arrays": (b"a = " + b"[" * 100_000 + b"]" * 100_000, "deep"),
    "deep-inline-tables": (b"a = " + b"{b = " * 5_000 + b"1" + b"}" * 5_000, "TOML"),
    "deep-dotted-keys": (("[" + ".".join(["k"] * 20_000) + "]\n").encode(), "key 'k'"),
    "unknown-top-key": (("colour = 'red'\n" + BASE).encode(), "colour"),
    "unknown-step-key": (_step('colour = "red"').encode(), "colour"),
    "wrong-type-title": (BASE.replace('title = {en = "hostile"}', "title = 5").encode(), "title"),
    "wrong-type-timeout": (_step('timeout = "slow"').encode(), "timeout"),
    "wrong-type-expect": (
        BASE.replace('{client = "ESTABLISHED"}', "{client = 5}").encode(),
        "step 2 (2): expect.client must be a string",
    ),
    "wrong-type-steps": (BASE.split("[[step]]", maxsplit=1)[0].encode() + b"step = 7\n", "step"),
    "missing-side": (BASE.replace("{client = ", "{ghost = ").encode(), "ghost"),
    "unknown-state": (BASE.replace('"ESTABLISHED"', '"ESTABLISHING"').encode(), "ESTABLISHING"),
    "hold-unknown-port": (
        _step('hold = {id = "h", kind = "drop_syn", at = "server", port = "nope"}').encode(),
        "nope",
    ),
    "hold-unknown-side": (
        _step('hold = {id = "h", kind = "drop_syn", at = "moon"}').encode(),
        "moon",
    ),
    "hold-unknown-kind": (
        _step('hold = {id = "h", kind = "drop_everything", at = "server"}').encode(),
        "drop_everything",
    ),
    "hold-in-loopback-only-lab": (
        (LOOPBACK_BASE + 'hold = {id = "h", kind = "drop_syn", at = "server"}\n').encode(),
        "hold",
    ),
    "release-unknown-hold": (_step('release = "never-held"').encode(), "never-held"),
    "only-unknown-topology": (_step('only = "mars"').encode(), "mars"),
    "topologies-unknown": (BASE.replace('["netns"]', '["moon"]').encode(), "moon"),
    "binary-garbage": (bytes(range(256)) * 64, "UTF-8"),
    "nul-bytes": (b"\x00" * 4096, "not valid TOML"),
    "empty": (b"", "missing title"),
    "bom-and-junk": (b"\xef\xbb\xbf= = =\n", "not valid TOML"),
    # A sysctl step's key used to pass the loader and fail (a traceback) when its step ran.
    "sysctl-step-dotdot": (_sysctl_step("net.ipv4.../../../etc/x").encode(), "step 3 (3)"),
    "sysctl-step-slash": (_sysctl_step("net.ipv4.conf/all").encode(), "sysctl key"),
    "sysctl-step-empty-part": (_sysctl_step("net.ipv4..tcp_tw_reuse").encode(), "sysctl key"),
    "sysctl-step-host-key": (_sysctl_step("kernel.panic").encode(), "net.ipv4.*"),
    "sysctl-step-not-text": (_sysctl_step(7).encode(), "argument 'key' must be a string"),
    "sysctl-table-dotdot": (
        BASE.replace(
            'topologies = ["netns"]',
            'topologies = ["netns"]\nsysctls = {client = {"net.core.." = 1}}',
        ).encode(),
        "sysctl key",
    ),
    "too-many-steps": (
        (
            BASE
            + "".join('[[step]]\naction = "observe"\nexplain = {en = "x"}\n' for _ in range(600))
        ).encode(),
        "steps",
    ),
}


def _run(path: str) -> subprocess.CompletedProcess[str]:
    """Run the lab; fail if it made any namespace. Only this run's are looked for (ours carry
    the run's pid): another test's or another user's namespaces, decoys included, come and go
    meanwhile on a shared machine and say nothing about this run."""
    with subprocess.Popen(
        [*CLI, "run", path, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=30)
    made = [n for n in netns_names() if n.startswith(f"hslab-{proc.pid}-")]
    assert made == [], f"a rejected lab made namespaces {made}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], path: str, word: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert path in lines[0], lines[0]
    assert word in lines[0], lines[0]
    assert proc.stdout == "", "a rejected lab must not start the JSON stream"
    return lines[0]


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_hostile_lab_file_is_one_line_exit_4_and_builds_nothing(tmp_path: Path, case: str) -> None:
    content, word = CONTENTS[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(content)
    proc = _run(str(path))
    assert proc.returncode == ExitStatus.LAB_INVALID, proc.stderr[-2000:]
    _assert_one_line_error(proc, str(path), word)


def _fifo(tmp: Path) -> str:
    path = tmp / "fifo.toml"
    os.mkfifo(path)
    return str(path)  # no writer ever opens it: reading must not wait for one


def _directory(tmp: Path) -> str:
    path = tmp / "dir.toml"
    path.mkdir()
    return str(path)


def _under_a_file(tmp: Path) -> str:
    (tmp / "plain").write_text("")
    return str(tmp / "plain" / "x.toml")  # ENOTDIR: no such lab file, as for ENOENT


def _dangling_symlink(tmp: Path) -> str:
    path = tmp / "link.toml"
    path.symlink_to(tmp / "nowhere.toml")
    return str(path)


NOT_FILES: dict[str, tuple[Callable[[Path], str], ExitStatus, str]] = {
    # Endless character devices: read until memory ran out before the loader's fix.
    "dev-zero": (lambda _: "/dev/zero", ExitStatus.LAB_INVALID, "regular file"),
    "dev-urandom": (lambda _: "/dev/urandom", ExitStatus.LAB_INVALID, "regular file"),
    # A FIFO nobody writes to: blocked forever in open() before the fix.
    "fifo": (_fifo, ExitStatus.LAB_INVALID, "regular file"),
    "directory": (_directory, ExitStatus.LAB_INVALID, "directory"),
    # Root reads any mode-000 file, so "unreadable" is a file whose read() fails: EIO.
    "unreadable-proc-self-mem": (lambda _: "/proc/self/mem", ExitStatus.LAB_INVALID, "cannot"),
    "missing": (lambda t: str(t / "absent.toml"), ExitStatus.LAB_NOT_FOUND, "no such lab file"),
    "under-a-file": (_under_a_file, ExitStatus.LAB_NOT_FOUND, "no such lab file"),
    "dangling-symlink": (_dangling_symlink, ExitStatus.LAB_NOT_FOUND, "no such lab file"),
}


@pytest.mark.parametrize("case", sorted(NOT_FILES))
def test_path_that_is_not_a_lab_file_is_one_line_error(tmp_path: Path, case: str) -> None:
    make, status, word = NOT_FILES[case]
    path = make(tmp_path)
    proc = _run(path)
    assert proc.returncode == status, proc.stderr[-2000:]
    _assert_one_line_error(proc, path, word)


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_lab_check_gives_one_line_with_the_line_number(tmp_path: Path, case: str) -> None:
    """``lab check`` on the same files: one problem line, ``FILE:LINE: ...``, exit 4."""
    content, word = CONTENTS[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(content)
    proc = subprocess.run(
        [*CLI, "lab", "check", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    assert proc.returncode == ExitStatus.LAB_INVALID, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[-2000:]
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", lines[0]), lines[0]
    assert word in lines[0], lines[0]
