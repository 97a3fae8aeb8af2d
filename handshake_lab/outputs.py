"""Files the tool writes for the user (``--pcap``): checked before step 1, never through a link.

Two calls, one rule for every output file:

* ``check_output(path)`` runs before anything is built. The directory must exist and take a
  new file (a real probe: a temporary file is created in it and removed, so read-only mounts,
  ACLs and full quotas are found too, not only mode bits); the target, if it exists, must be a
  regular file or a device such as ``/dev/null``, never a symlink or a directory. Each refusal is
  an ``OutputError``: one line, exit status ``OUTPUT_UNWRITABLE``.
* ``write_output(path, write)`` writes at the end. A regular file is written to a temporary
  file in the same directory (``.NAME.<random>.part``, created with O_EXCL so it is never an
  existing file or link) and renamed over the target only when every byte is on disk: a write
  error (a full disk, a size limit) leaves the old file or no file, and the error says so,
  never a cut-short file under the target's name. A target that turned into a symlink since
  the check is refused again; rename would replace the link, not write through it, but a
  link where the user named a file is a surprise worth stopping for. An existing file that is
  replaced is said on stderr. A device or a FIFO is written in place, opened with O_NOFOLLOW.

Why not just ``open(path, "wb")``: as root it followed a symlink into /etc and overwrote
silently (issue 18), and a missing directory was found only after the whole lab had run.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from handshake_lab.errors import OutputError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def _target_kind(path: Path) -> str:
    """``absent``, ``regular`` or ``special`` (device, FIFO); ``OutputError`` for the rest."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise OutputError(f"{path}: is a symbolic link; refusing to write through it")
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{path}: is a directory")
    if stat.S_ISREG(info.st_mode):
        return "regular"
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
        return "special"
    raise OutputError(f"{path}: not a regular file")


def check_output(path: Path) -> None:
    """Refuse, before step 1, an output path that ``write_output`` could not write."""
    kind = _target_kind(path)
    if kind == "special":
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: cannot write: {os.strerror(errno.EACCES)}")
        return
    parent = path.parent
    try:
        info = os.stat(parent)
    except OSError as exc:
        raise OutputError(f"{path}: directory {parent} {_missing(exc)}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{path}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"{path}: cannot create a file in {parent}: {_reason(exc)}") from exc
    os.close(fd)
    os.unlink(probe)
    if kind == "regular" and not os.access(path, os.W_OK):
        # rename() could replace it, but the user (or a sticky directory) said it is not ours.
        raise OutputError(f"{path}: exists and is not writable")


def _missing(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return f"cannot be used: {_reason(exc)}"


def write_output(
    path: Path,
    write: Callable[[BinaryIO], object],
    *,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Write ``path`` with ``write(stream)``: all or nothing, never through a symlink.

    ``announce`` gets the stderr line for a replaced file (default: stderr itself).
    Raises ``OutputError`` for every failure, the target left as it was.
    """
    say = announce if announce is not None else _to_stderr
    kind = _target_kind(path)
    if kind == "special":
        _write_in_place(path, write)
        return
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        existed = _target_kind(path) == "regular"  # raises if it became a link or a directory
        # mkstemp makes 0600; the file gets the mode open() would have given it.
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) if existed else 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {_reason(exc)}; nothing was written") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if existed:
        say(f"handshake-lab: replaced the existing file {path}")


def _write_in_place(path: Path, write: Callable[[BinaryIO], object]) -> None:
    # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of hanging the exit.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | _NOFOLLOW)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as stream:
            write(stream)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc


def _umask() -> int:
    """The process umask, read without setting it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


__all__ = ["check_output", "write_output"]
