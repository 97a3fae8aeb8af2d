"""Enter a network namespace from Python: ``setns(2)`` for the calling thread.

Why in-process and not ``ip netns exec``: one Python process drives both ends of a lab, and a
socket stays in the namespace it was created in (KERNEL-FACTS, "Namespaces"). So the lab enters
the server's namespace, creates the listening socket, switches back, enters the client's
namespace, creates the client socket, switches back; the event loop then serves both sockets
from the host namespace.

``setns`` changes the namespace of the calling THREAD only. Python 3.12 has ``os.setns``; on 3.11
we call libc's ``setns`` through ctypes. ``in_netns`` keeps a descriptor of the thread's original
namespace (``/proc/thread-self/ns/net``) and always switches back, also when the body raises.

Never ``await`` inside ``in_netns`` on an event-loop thread: every other task the loop runs
meanwhile would open its sockets in the lab's namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from handshake_lab import tools
from handshake_lab.errors import MissingDependencyError, NetworkError

CLONE_NEWNET = 0x40000000
"""``<sched.h>``: the namespace type argument of ``setns`` for network namespaces."""

NETNS_RUN_DIR = Path("/run/netns")
"""Where ``ip netns add`` bind-mounts named namespaces."""

_THREAD_NET_NS = "/proc/thread-self/ns/net"

_libc_setns: Callable[[int, int], int] | None = None


def _load_libc_setns() -> Callable[[int, int], int]:
    """libc's ``setns`` (loaded once); ctypes because Python 3.11 has no ``os.setns``."""
    global _libc_setns  # noqa: PLW0603 - a lazily loaded module-level handle
    if _libc_setns is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.setns
        function.argtypes = [ctypes.c_int, ctypes.c_int]
        function.restype = ctypes.c_int
        _libc_setns = function
    return _libc_setns


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace open at ``fd``; ``OSError`` on failure."""
    native = getattr(os, "setns", None)
    if native is not None:
        native(fd, nstype)
        return
    if _load_libc_setns()(fd, nstype) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def netns_path(name: str) -> Path:
    """The bind mount of the named namespace; ``ValueError`` for names ``ip`` would refuse."""
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"bad network namespace name {name!r}")
    return NETNS_RUN_DIR / name


def _enter_error(name: str, error: OSError) -> Exception:
    """Translate ``open``/``setns`` failures into the project's error tree."""
    if error.errno in {errno.EPERM, errno.EACCES}:
        return MissingDependencyError(
            f"cannot enter network namespace {name}: needs root (CAP_SYS_ADMIN)"
        )
    if error.errno == errno.ENOENT:
        return NetworkError(f"no network namespace named {name}")
    return NetworkError(f"cannot enter network namespace {name}: {error.strerror or error}")


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace ``name``, then switch back.

    Sockets created in the body stay in ``name`` for their whole life. If switching back fails
    (which would leave the thread in the lab's namespace) ``RuntimeError`` is raised: carrying on
    would open later sockets in the wrong place.
    """
    original = os.open(_THREAD_NET_NS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise _enter_error(name, error) from error
        try:
            setns(target, CLONE_NEWNET)
        except OSError as error:
            raise _enter_error(name, error) from error
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                setns(original, CLONE_NEWNET)
            except OSError as error:  # pragma: no cover - needs a kernel refusing the way back
                raise RuntimeError(
                    f"could not return from network namespace {name}: {error}"
                ) from error
    finally:
        os.close(original)


def netns_exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside namespace ``name`` by ``ip netns exec``."""
    netns_path(name)
    return [tools.command("ip"), "netns", "exec", name, *argv]


__all__ = ["CLONE_NEWNET", "NETNS_RUN_DIR", "in_netns", "netns_exec_argv", "netns_path", "setns"]
