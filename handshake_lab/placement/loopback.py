"""``loopback``: both ends in this process on 127.0.0.1 (``--ip 6``: ::1), one socket table
read once per poll."""

from __future__ import annotations

import socket
from collections.abc import Callable

from handshake_lab.errors import MissingDependencyError
from handshake_lab.net.sides import LocalClients, LocalServer
from handshake_lab.observe.base import Observer
from handshake_lab.observe.defaults import fast_observers
from handshake_lab.placement.placed import Placed, loopback_host
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import Lab


def loopback(lab: Lab, make_observers: Callable[[], list[Observer]], ip: int = 4) -> Placed:
    host = loopback_host(ip)
    if ip == 6:
        _require_ipv6_loopback(host)
    observers = make_observers()
    fast = fast_observers()
    if not fast:
        # No netlink: the runner builds both sides itself and reads one table per poll.
        return Placed(Topology.LOOPBACK, observers, host=host)
    return Placed(
        Topology.LOOPBACK,
        observers,
        server=LocalServer(host, observers, echo=lab.echo, fast_observers=fast),
        clients=LocalClients(host, lab.clients, observers),
        host=host,
        shared_table=True,
    )


def _require_ipv6_loopback(host: str) -> None:
    """Refuse before step 1, in one line, where this machine has no ::1 (IPv6 disabled)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        raise MissingDependencyError(
            f"--ip 6: this machine has no IPv6 loopback ({host}: {exc.strerror or exc}); "
            "run with --ip 4"
        ) from exc
