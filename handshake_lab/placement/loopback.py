"""``loopback``: both ends in this process on 127.0.0.1 (``--ip 6``: ::1), one socket table
read once per poll."""

from __future__ import annotations

import socket
from collections.abc import Callable

from handshake_lab.errors import MissingDependencyError
from handshake_lab.net.sides import WILDCARD6, LocalClients, LocalServer
from handshake_lab.observe.base import Observer
from handshake_lab.observe.defaults import fast_observers
from handshake_lab.placement.placed import LOOPBACK_HOST6, Placed, loopback_host
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import DUAL_STACK, Lab


def loopback(lab: Lab, make_observers: Callable[[], list[Observer]], ip: int = 4) -> Placed:
    """Both ends here on 127.0.0.1 or ::1; both families (127.0.0.1 and ::1) for ``DUAL_STACK``."""
    dual = ip == DUAL_STACK
    host = loopback_host(4 if dual else ip)
    host6 = LOOPBACK_HOST6 if dual else None
    if ip != 4:
        _require_ipv6_loopback(LOOPBACK_HOST6, f"lab {lab.name} uses IPv6 too" if dual else "")
    observers = make_observers()
    fast = fast_observers()
    if not fast:
        # No netlink: the runner builds both sides itself and reads one table per poll.
        return Placed(Topology.LOOPBACK, observers, host=host, host6=host6)
    return Placed(
        Topology.LOOPBACK,
        observers,
        server=LocalServer(
            host,
            observers,
            echo=lab.echo,
            fast_observers=fast,
            port_host=WILDCARD6 if dual else None,
        ),
        clients=LocalClients(host, lab.clients, observers),
        host=host,
        shared_table=True,
        host6=host6,
    )


def _require_ipv6_loopback(host: str, dual: str = "") -> None:
    """Refuse before step 1, in one line, where this machine has no ::1 (IPv6 disabled).
    ``dual``: the reason a lab of both families needs it (then there is no --ip 4 to offer)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        why = f"{host}: {exc.strerror or exc}"
        if dual:
            raise MissingDependencyError(
                f"{dual}, and this machine has no IPv6 loopback ({why})"
            ) from exc
        raise MissingDependencyError(
            f"--ip 6: this machine has no IPv6 loopback ({why}); run with --ip 4"
        ) from exc
