"""Output files (``handshake_lab.outputs``): refused before step 1, never written through a
link, all or nothing, a replaced file said. Real files in ``tmp_path``; no sockets."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from handshake_lab.errors import ExitStatus, OutputError
from handshake_lab.outputs import check_output, write_output


def _write(data: bytes) -> Callable[[BinaryIO], None]:
    def write(stream: BinaryIO) -> None:
        stream.write(data)

    return write


def _leftover_parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_a_new_file_is_written_with_the_mode_open_would_give(tmp_path: Path) -> None:
    target = tmp_path / "run.pcap"
    said: list[str] = []
    check_output(target)
    assert not target.exists(), "the check leaves nothing behind"
    write_output(target, _write(b"pcap"), announce=said.append)
    assert target.read_bytes() == b"pcap"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert said == []
    assert _leftover_parts(tmp_path) == []


def test_replacing_a_file_says_so_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "run.pcap"
    target.write_bytes(b"old")
    target.chmod(0o640)
    said: list[str] = []
    write_output(target, _write(b"new"), announce=said.append)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert said == [f"handshake-lab: replaced the existing file {target}"]


def test_a_symlink_target_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "run.pcap"
    link.symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link") as caught:
        check_output(link)
    assert caught.value.exit_status is ExitStatus.OUTPUT_UNWRITABLE
    with pytest.raises(OutputError, match="symbolic link"):
        write_output(link, _write(b"evil"))
    assert victim.read_bytes() == b"precious"
    assert link.is_symlink()
    dangling = tmp_path / "dangling.pcap"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_a_link_swapped_in_after_the_check_is_refused_at_the_write(tmp_path: Path) -> None:
    target = tmp_path / "run.pcap"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    check_output(target)

    def write(stream: BinaryIO) -> None:
        stream.write(b"evil")
        target.symlink_to(victim)  # the race: a link appears while the capture is written

    with pytest.raises(OutputError, match="symbolic link"):
        write_output(target, write)
    assert victim.read_bytes() == b"precious"
    assert _leftover_parts(tmp_path) == []


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: t / "missing" / "run.pcap", "directory .* does not exist"),
        (lambda t: t / "a-file" / "run.pcap", "Not a directory"),
        (lambda t: t, "is a directory"),
        (lambda t: Path("/proc/run.pcap"), "cannot create a file in /proc"),
    ],
    ids=["missing-directory", "parent-is-a-file", "target-is-a-directory", "read-only-place"],
)
def test_paths_that_cannot_be_written_are_refused_before_anything(
    tmp_path: Path, make: Callable[[Path], Path], words: str
) -> None:
    (tmp_path / "a-file").write_text("")
    target = make(tmp_path)
    with pytest.raises(OutputError, match=words) as caught:
        check_output(target)
    assert str(target) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_failed_write_leaves_the_old_file_and_no_part_file(tmp_path: Path) -> None:
    target = tmp_path / "run.pcap"
    target.write_bytes(b"old and complete")

    def write(stream: BinaryIO) -> None:
        stream.write(b"half of the")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match="No space left on device; nothing was written"):
        write_output(target, write)
    assert target.read_bytes() == b"old and complete"
    assert _leftover_parts(tmp_path) == []


def test_a_real_kernel_write_error_leaves_no_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a child: the kernel refuses the write past 4 KiB (EFBIG; Python
    ignores SIGXFSZ), as a full disk would, with no disk filled and nothing of the host
    changed."""
    target = tmp_path / "run.pcap"
    child = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from handshake_lab.errors import OutputError\n"
        "from handshake_lab.outputs import write_output\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    write_output(Path(sys.argv[1]), lambda s: s.write(b'x' * 65536))\n"
        "except OutputError as e:\n"
        "    print(e); sys.exit(int(e.exit_status))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == ExitStatus.OUTPUT_UNWRITABLE, proc.stderr
    assert proc.stdout.strip() == f"{target}: cannot write: File too large; nothing was written"
    assert not target.exists()
    assert _leftover_parts(tmp_path) == []


def test_a_device_is_written_in_place_and_its_errors_are_one_line() -> None:
    check_output(Path("/dev/null"))
    write_output(Path("/dev/null"), _write(b"x"))  # not replaced by a regular file
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    check_output(Path("/dev/full"))
    with pytest.raises(OutputError, match="/dev/full: cannot write: No space left on device"):
        write_output(Path("/dev/full"), _write(b"x" * 100_000))
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_without_a_reader_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "run.pcap"
    os.mkfifo(fifo)
    check_output(fifo)
    with pytest.raises(OutputError, match="cannot write"):
        write_output(fifo, _write(b"x"))
