"""Build the two ends of a lab for a topology, and tear them down afterwards.

``loopback``: both ends in this process on 127.0.0.1, one socket table read once per poll.
``netns``: a server and a client network namespace joined by a veth pair (198.18.0.0/24, see
``topo.pair``); sockets are created inside each namespace and each end's table is read there.
Everything the topology creates is recorded before creation and removed when the ``with`` block
ends, whatever ends it (exception, Ctrl-C, SIGTERM turned into an exception by the CLI). A run
killed with SIGKILL leaves a record that the next run's ``stale_cleanup`` acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from handshake_lab.errors import MissingDependencyError
from handshake_lab.lab.model import Lab
from handshake_lab.net.placement import ClientSide, LocalClients, LocalServer, ServerSide
from handshake_lab.observe.base import Observer
from handshake_lab.observe.scoped import ScopedObserver

TOPOLOGIES: tuple[str, ...] = ("loopback", "netns")
LOOPBACK_HOST = "127.0.0.1"

ObserverFactory = Callable[[], list[Observer]]


@dataclass
class Placed:
    """The two ends of a lab; ``server``/``clients`` None means loopback in this process."""

    topology: str
    observers: list[Observer]
    server: ServerSide | None = None
    clients: ClientSide | None = None
    host: str = LOOPBACK_HOST
    details: dict[str, str] = field(default_factory=dict)
    shared_table: bool = False


def fast_observer(netns: str | None) -> Observer | None:
    """The netlink observer for polling (in ``netns``), or None where it cannot work."""
    from handshake_lab.errors import HandshakeLabError  # noqa: PLC0415
    from handshake_lab.observe.netlink import NetlinkObserver  # noqa: PLC0415

    try:
        observer = NetlinkObserver(netns=netns)
        observer.snapshot([])
    except (HandshakeLabError, OSError):
        return None
    return observer


@contextmanager
def placed(
    topology: str,
    lab: Lab,
    make_observers: ObserverFactory,
    *,
    sysctls: Mapping[str, Mapping[str, str | int]] | None = None,
) -> Iterator[Placed]:
    """Yield the lab's two ends for ``topology``; remove whatever was created on exit."""
    if topology == "loopback":
        observers = make_observers()
        fast = fast_observer(None)
        if fast is None:
            yield Placed("loopback", observers)
            return
        yield Placed(
            "loopback",
            observers,
            server=LocalServer(LOOPBACK_HOST, observers, echo=lab.echo, fast_observers=[fast]),
            clients=LocalClients(LOOPBACK_HOST, lab.clients, observers),
            shared_table=True,
        )
        return
    if topology != "netns":
        raise ValueError(f"unknown topology {topology!r}")
    from handshake_lab.topo.caps import netns_capability  # noqa: PLC0415
    from handshake_lab.topo.netns import in_netns  # noqa: PLC0415
    from handshake_lab.topo.pair import NetnsPair  # noqa: PLC0415
    from handshake_lab.topo.registry import stale_cleanup  # noqa: PLC0415

    ok, reason = netns_capability()
    if not ok:
        raise MissingDependencyError(f"--topology netns unavailable: {reason}")
    stale_cleanup()  # leftovers of runs that were SIGKILLed
    sysctls = sysctls if sysctls is not None else lab.sysctls
    pair = NetnsPair(server_sysctls=sysctls.get("server"), client_sysctls=sysctls.get("client"))
    with pair:

        def scope_of(ns: str) -> Callable[[], AbstractContextManager[None]]:
            return lambda: in_netns(ns)

        def scoped(ns: str) -> list[Observer]:
            # psutil reads the main thread's namespace: see observe.scoped.
            return [
                ScopedObserver(inner, scope_of(ns), main_thread=inner.name == "psutil")
                for inner in make_observers()
            ]

        server = LocalServer(
            pair.server_addr,
            scoped(pair.server_ns),
            echo=lab.echo,
            scope=scope_of(pair.server_ns),
            netns=pair.server_ns,
            fast_observers=[f] if (f := fast_observer(pair.server_ns)) else [],
        )
        clients = LocalClients(
            pair.client_addr,
            lab.clients,
            scoped(pair.client_ns),
            scope=scope_of(pair.client_ns),
            netns=pair.client_ns,
            fast_observers=[f] if (f := fast_observer(pair.client_ns)) else [],
        )
        yield Placed(
            "netns",
            server.observers,
            server=server,
            clients=clients,
            host=pair.server_addr,
            details={
                "server_ns": pair.server_ns,
                "client_ns": pair.client_ns,
                "client_veth": pair.client_veth,
                "client_addr": pair.client_addr,
                "run_id": pair.run_id,
            },
        )
