"""An observer that reads another network namespace's socket table.

``ss`` and netlink read the namespace of the calling thread (``ss`` because a child process
inherits the forking thread's namespace), so running them in a worker thread that switched into
the lab's namespace (``topo.netns.in_netns``) reads that namespace.

psutil is different, and silently so: it reads ``/proc/net/tcp``, which resolves through
``/proc/self`` to the namespace of the process's *main* thread. From a worker thread inside a
namespace it returns the main thread's sockets (measured: an empty list for a listener that
``ss`` in the same thread saw). A psutil read must therefore switch the main thread itself,
which is what ``main_thread=True`` tells the caller (``net.placement``): run it inline on the
event loop's thread, where a ~3 ms read is an acceptable pause.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager

from handshake_lab.observe.base import Observer, SocketRecord


class ScopedObserver:
    """Run ``inner.snapshot`` inside ``scope()`` (for example: inside a network namespace)."""

    def __init__(
        self,
        inner: Observer,
        scope: Callable[[], AbstractContextManager[None]],
        *,
        main_thread: bool = False,
    ) -> None:
        self.inner = inner
        self.scope = scope
        self.name = inner.name
        self.main_thread = main_thread

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        with self.scope():
            return self.inner.snapshot(ports)


def needs_main_thread(observer: Observer) -> bool:
    """True if ``observer`` must be called from the main thread (see the module docstring)."""
    return bool(getattr(observer, "main_thread", False))
