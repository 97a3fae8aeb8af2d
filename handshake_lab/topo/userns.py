"""Unprivileged network namespaces: rerun the command inside a private user namespace.

Why: the netns topology needs CAP_SYS_ADMIN (to create and enter namespaces) and CAP_NET_ADMIN
(veth, addresses, nft, sysctls). A normal user gets both, over namespaces of their own, by
creating a user namespace first (``unshare -rn``; KERNEL-FACTS, "Namespaces"). Inside it the
user is uid 0, so the same code that builds the topology as root builds it here, with three
differences the labs state where they matter:

- tracefs cannot be mounted or written in a user namespace: no transition stream; the labs
  read the states from ``ss``/psutil/netlink and the packets from the capture as usual;
- the process's namespaces (user, mount, network) belong to it alone, and the kernel frees
  them, with every veth, nft table and sysctl inside, when the last process in them exits.
  Nothing can outlive the run, not even after SIGKILL, so no registry or cleanup is needed;
- the host is out of reach by construction: the user has no capability over the host's
  network namespace.

How: ``run`` re-executes itself as ``unshare --user --map-root-user --net --mount
--propagation private -- python -m handshake_lab run ...``. ``unshare`` execs without forking,
so the pid, the terminal, stdin/stdout and the signals stay those of the original process.
In the new process, ``prepare`` mounts a fresh tmpfs on ``/run`` (private to its mount
namespace): ``ip netns add`` needs a writable ``/run/netns`` for its bind mounts, and the run
registry lives in ``/run/hslab``. The host's ``/run`` is untouched; this process just no
longer sees it, which is why output files under ``/run`` are refused before re-executing.

Why re-exec and not ``unshare(2)`` in-process: ``CLONE_NEWUSER`` fails (EINVAL) in a
multi-threaded process and is irreversible, which rules it out for a library that tests and
callers use in-process; re-executing confines it to one command-line run.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from handshake_lab import tools
from handshake_lab.errors import MissingDependencyError, UsageError

FORCE_ENV = "HANDSHAKE_LAB_USERNS"
"""``1``: use the user namespace even as root (tests; or to see what a normal user sees)."""

CHILD_ENV = "HANDSHAKE_LAB_IN_USERNS"
"""Set by the re-exec: this process is the one ``unshare`` started."""

PRIVATE_RUN = Path("/run")

MS_NOSUID = 0x2
MS_NODEV = 0x4

_INITIAL_UID_MAP = [(0, 0, 4294967295)]
"""The initial user namespace maps every uid to itself."""


def parse_uid_map(text: str) -> list[tuple[int, int, int]]:
    """``/proc/self/uid_map`` as ``(inside, outside, count)`` rows; ``ValueError`` if malformed."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"bad uid_map line {line!r}")
        try:
            inside, outside, count = (int(field) for field in fields)
        except ValueError as error:
            raise ValueError(f"bad uid_map line {line!r}") from error
        rows.append((inside, outside, count))
    return rows


def in_user_namespace(uid_map: str | None = None) -> bool:
    """True unless this process is in the initial user namespace (identity map of all uids)."""
    if uid_map is None:
        try:
            uid_map = Path("/proc/self/uid_map").read_text(encoding="ascii")
        except OSError:
            return False
    return parse_uid_map(uid_map) != _INITIAL_UID_MAP


def is_userns_child(environ: Mapping[str, str] | None = None) -> bool:
    """True in the process the re-exec started (marker set and really in a user namespace)."""
    env = os.environ if environ is None else environ
    return env.get(CHILD_ENV) == "1" and in_user_namespace()


def wants_userns(
    *, euid: int, environ: Mapping[str, str], needs_netns: bool, in_child: bool
) -> bool:
    """Should this ``run`` re-execute itself in a user namespace?

    Only when the topology needs namespaces, this is not already the re-executed process, and
    either the user is not root or ``HANDSHAKE_LAB_USERNS=1`` asks for it.
    """
    if not needs_netns or in_child:
        return False
    return euid != 0 or environ.get(FORCE_ENV) == "1"


def userns_argv(arguments: Sequence[str], python: str | None = None) -> list[str]:
    """The command that reruns ``handshake-lab ARGUMENTS`` in private user/net/mount namespaces."""
    unshare = tools.find("unshare")
    if unshare is None:
        raise MissingDependencyError(
            "unshare not found: install util-linux (needed for network namespaces without root)"
        )
    return [
        unshare,
        "--user",
        "--map-root-user",
        "--net",
        "--mount",
        "--propagation",
        "private",
        "--",
        python or sys.executable,
        "-m",
        "handshake_lab",
        *arguments,
    ]


def refuse_private_paths(paths: Sequence[Path | None]) -> None:
    """Files under ``/run`` are out of sight after the rerun (a private tmpfs covers ``/run``):
    an output written there would vanish and an input would be missing. Refuse them first."""
    for path in paths:
        if path is None:
            continue
        resolved = path.expanduser().resolve()
        if resolved == PRIVATE_RUN or PRIVATE_RUN in resolved.parents:
            raise UsageError(
                f"{path}: without root the run sees a private /run, where this file would be "
                "out of reach; use another directory"
            )


def reexec(arguments: Sequence[str]) -> None:
    """Replace this process by the same command inside a user namespace. Does not return."""
    argv = userns_argv(arguments)
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, env)
    except OSError as error:
        raise MissingDependencyError(f"cannot run {argv[0]}: {error.strerror}") from error


def _mount_tmpfs(target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    flags = MS_NOSUID | MS_NODEV
    if libc.mount(b"hslab", os.fsencode(target), b"tmpfs", flags, b"mode=0755") != 0:
        code = ctypes.get_errno()
        raise MissingDependencyError(
            f"cannot mount a private tmpfs on {target} in the user namespace: {os.strerror(code)}"
        )


def prepare() -> None:
    """In the re-executed process: a private ``/run`` with ``/run/netns`` for ``ip netns``."""
    if not in_user_namespace():
        raise MissingDependencyError(
            f"{CHILD_ENV} is set but this process is not in a user namespace"
        )
    _mount_tmpfs(PRIVATE_RUN)
    (PRIVATE_RUN / "netns").mkdir(mode=0o755)


__all__ = [
    "CHILD_ENV",
    "FORCE_ENV",
    "in_user_namespace",
    "is_userns_child",
    "parse_uid_map",
    "prepare",
    "reexec",
    "refuse_private_paths",
    "userns_argv",
    "wants_userns",
]
