"""``loopback``: both ends in this process on 127.0.0.1, one socket table read once per poll."""

from __future__ import annotations

from collections.abc import Callable

from handshake_lab.net.sides import LocalClients, LocalServer
from handshake_lab.observe.base import Observer
from handshake_lab.observe.defaults import fast_observers
from handshake_lab.placement.placed import LOOPBACK_HOST, Placed
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import Lab


def loopback(lab: Lab, make_observers: Callable[[], list[Observer]]) -> Placed:
    observers = make_observers()
    fast = fast_observers()
    if not fast:
        # No netlink: the runner builds both sides itself and reads one table per poll.
        return Placed(Topology.LOOPBACK, observers)
    return Placed(
        Topology.LOOPBACK,
        observers,
        server=LocalServer(LOOPBACK_HOST, observers, echo=lab.echo, fast_observers=fast),
        clients=LocalClients(LOOPBACK_HOST, lab.clients, observers),
        shared_table=True,
    )
