"""The error tree and the exit codes it maps to.

Every failure a user can cause or meet is one of these classes; each carries the exit code the
CLI returns for it (the idea is httpie's ``ExitStatus``). Foreign exceptions (``OSError``,
psutil's ``AccessDenied``, a missing ``ss`` binary) are translated into this tree at the one
boundary that meets them, with ``raise ... from`` so ``--debug`` still shows the cause.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_status``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Exit codes of ``handshake-lab``. Stable: graders and CI scripts depend on them."""

    OK = 0
    """Every step of the lab agreed with the kernel."""
    ERROR = 1
    """An unexpected internal error (a bug: please report it with ``--debug`` output)."""
    USAGE = 2
    """Bad command-line usage (Click's own code)."""
    KERNEL_DISAGREED = 3
    """The lab ran, and the kernel reported something other than the lab expected."""
    LAB_INVALID = 4
    """A lab file is missing, unreadable or malformed."""
    LAB_NOT_FOUND = 5
    """No built-in lab has that name and no file has that path."""
    MISSING_DEPENDENCY = 6
    """An observer, a library or a privilege the command needs is not available."""
    NETWORK_ERROR = 7
    """A socket operation failed in a way the lab did not ask for (busy port, ...)."""
    QUIZ_WRONG = 8
    """``--quiz``: the kernel agreed with the lab, but some predictions were wrong."""
    OUTPUT_UNWRITABLE = 9
    """An output file (``--pcap``) cannot be written: checked before step 1, or failed at the
    end (then nothing was left under its name)."""
    RUN_INVALID = 10
    """A saved run (``run --json`` output) is unreadable, truncated or not a run."""
    ANSWERS_INVALID = 11
    """``--answers``: the answers file cannot be read as answers to this lab (malformed TOML,
    an unknown step, side, question or state); the message names the file and the line."""
    CLASS_DIR_INVALID = 12
    """``grade DIR``: DIR is not a directory of submissions (missing, empty of runs, or holding
    a file in another layout). A student's unreadable run is not this: it is graded as such."""
    NETEM_UNAVAILABLE = 13
    """``--delay``/``--loss`` (``run``, ``play``, ``sweep``): this kernel has no netem qdisc
    (``CONFIG_NET_SCH_NETEM`` off, or its module missing), found by a probe in a namespace the
    tool made, before step 1. ``doctor`` says so too."""
    INTERRUPTED = 130
    """Ctrl-C or SIGTERM: every socket and kernel object was cleaned up before exit."""


class HandshakeLabError(Exception):
    """Base of every error the CLI turns into one stderr line and an exit code."""

    exit_status: ExitStatus = ExitStatus.ERROR


class UsageError(HandshakeLabError):
    """A combination of options (or of options and lab) that cannot work."""

    exit_status = ExitStatus.USAGE


class LabNotFoundError(HandshakeLabError):
    exit_status = ExitStatus.LAB_NOT_FOUND


class LabInvalidError(HandshakeLabError):
    """A lab file is wrong. The message names the file and, where known, the line of the
    offending key (``FILE:LINE:``, as compilers do) and the step."""

    exit_status = ExitStatus.LAB_INVALID

    def __init__(
        self, path: str, message: str, step: str | None = None, line: int | None = None
    ) -> None:
        self.path = path
        self.step = step
        self.line = line
        self.detail = message
        where = f"{path}:{line}" if line is not None else path
        if step is not None:
            where += f": step {step}"
        super().__init__(f"{where}: {message}")


class AnswersInvalidError(HandshakeLabError):
    """An answers file cannot be read as answers to the lab. Names the file and the line."""

    exit_status = ExitStatus.ANSWERS_INVALID

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.detail = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class RunInvalidError(HandshakeLabError):
    """A saved run cannot be read back. The message names the file and the line."""

    exit_status = ExitStatus.RUN_INVALID


class ClassDirError(HandshakeLabError):
    """``grade``: the class directory is unusable. The message names the file or directory."""

    exit_status = ExitStatus.CLASS_DIR_INVALID


class MissingDependencyError(HandshakeLabError):
    exit_status = ExitStatus.MISSING_DEPENDENCY


class ObserverError(MissingDependencyError):
    """An observer could not read the socket table (binary missing, permission, parse)."""


class NetemUnavailableError(MissingDependencyError):
    """The kernel cannot delay or drop segments with tc netem (``--delay``, ``--loss``)."""

    exit_status = ExitStatus.NETEM_UNAVAILABLE


class NetworkError(HandshakeLabError):
    exit_status = ExitStatus.NETWORK_ERROR


class OutputError(HandshakeLabError):
    """An output path is refused (missing directory, read-only, a symlink) or a write failed."""

    exit_status = ExitStatus.OUTPUT_UNWRITABLE


class Interrupted(HandshakeLabError):
    exit_status = ExitStatus.INTERRUPTED
