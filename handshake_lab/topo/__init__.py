"""Where lab endpoints live, and ownership of every kernel object made for them.

``topo`` creates network namespaces, veth pairs and nft tables for a lab run and removes them
again on exit, Ctrl-C, SIGTERM, or (after SIGKILL) at the next run or ``doctor --cleanup``
(DESIGN.md point 10). Everything it makes is prefixed ``hslab-``/``hslab_`` plus a run id and
recorded before it is created.

- ``netns``: ``in_netns`` (enter a namespace for the calling thread), ``netns_exec_argv``.
- ``pair``: ``NetnsPair`` (server + client namespace joined by a veth), ``set_sysctl``.
- ``nft``: holds (``add_hold``, ``release``, ``dropped``) proved by nft counters.
- ``registry``: the per-run registry, ``stale_cleanup``, ``cleanup_leftovers``.
- ``caps``: ``netns_capability`` for ``doctor``.
"""

from __future__ import annotations

from handshake_lab.topo.caps import netns_capability
from handshake_lab.topo.netns import in_netns, netns_exec_argv
from handshake_lab.topo.nft import HoldHandle, HoldKind, add_hold, dropped, release
from handshake_lab.topo.pair import CLIENT_ADDR, SERVER_ADDR, NetnsPair, get_sysctl, set_sysctl
from handshake_lab.topo.registry import (
    KernelObject,
    cleanup_leftovers,
    is_owned_name,
    stale_cleanup,
)

__all__ = [
    "CLIENT_ADDR",
    "SERVER_ADDR",
    "HoldHandle",
    "HoldKind",
    "KernelObject",
    "NetnsPair",
    "add_hold",
    "cleanup_leftovers",
    "dropped",
    "get_sysctl",
    "in_netns",
    "is_owned_name",
    "netns_capability",
    "netns_exec_argv",
    "release",
    "set_sysctl",
    "stale_cleanup",
]
