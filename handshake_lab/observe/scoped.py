"""An observer that reads another network namespace's socket table.

psutil, ``ss`` and netlink all read the namespace of the calling thread (``ss`` because a child
process inherits the forking thread's namespace). Wrapping an observer so that each snapshot runs
inside a context that switches the thread into the lab's namespace (``topo.netns.in_netns``)
lets the same backends read a namespace without ``ip netns exec`` per poll.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager

from handshake_lab.observe.base import Observer, SocketRecord


class ScopedObserver:
    """Run ``inner.snapshot`` inside ``scope()`` (for example: inside a network namespace)."""

    def __init__(self, inner: Observer, scope: Callable[[], AbstractContextManager[None]]) -> None:
        self.inner = inner
        self.scope = scope
        self.name = inner.name

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        with self.scope():
            return self.inner.snapshot(ports)
