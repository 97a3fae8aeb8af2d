"""``netns`` and ``netns-agent``: a server and a client namespace joined by a veth pair.

Sockets are created inside each namespace (``topo.netns.in_netns``) and each end's table is read
there. Everything the placement creates is recorded before creation and removed when the
``with`` block ends, whatever ends it (exception, Ctrl-C, SIGTERM turned into an exception by
the CLI). A run killed with SIGKILL leaves a record that the next run's ``stale_cleanup`` (or
``doctor --cleanup``) acts on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from handshake_lab.errors import MissingDependencyError
from handshake_lab.net.sides import WILDCARD6, LocalClients, LocalServer, ServerSide
from handshake_lab.observe.base import Observer
from handshake_lab.observe.defaults import fast_observers
from handshake_lab.observe.scoped import ScopedObserver
from handshake_lab.placement.agent import agent_in_namespace
from handshake_lab.placement.placed import NetnsDetails, Placed
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import Lab
from handshake_lab.topo.caps import netns_capability
from handshake_lab.topo.netns import in_netns
from handshake_lab.topo.pair import NetnsPair
from handshake_lab.topo.registry import stale_cleanup


@contextmanager
def namespaces(
    topology: Topology,
    lab: Lab,
    make_observers: Callable[[], list[Observer]],
    *,
    sysctls: Mapping[str, Mapping[str, str | int]] | None = None,
    loop: str = "asyncio",
    ip: int = 4,
) -> Iterator[Placed]:
    """The lab's two ends in a fresh namespace pair (addresses of IP version ``ip``);
    everything removed on exit."""
    if not topology.in_namespaces:
        raise ValueError(f"{topology} is not a namespace placement")
    ok, reason = netns_capability()
    if not ok:
        raise MissingDependencyError(f"--topology netns unavailable: {reason}")
    stale_cleanup()  # leftovers of runs that were SIGKILLed
    sysctls = sysctls if sysctls is not None else lab.sysctls
    pair = NetnsPair(
        server_sysctls=sysctls.get("server"), client_sysctls=sysctls.get("client"), ip=ip
    )
    with pair:

        def scope_of(ns: str) -> Callable[[], AbstractContextManager[None]]:
            return lambda: in_netns(ns)

        def scoped(ns: str) -> list[Observer]:
            # psutil reads the main thread's namespace: see observe.scoped.
            return [
                ScopedObserver(inner, scope_of(ns), main_thread=inner.name == "psutil")
                for inner in make_observers()
            ]

        server_side: AbstractContextManager[ServerSide]
        if topology is Topology.NETNS_AGENT:
            server_side = agent_in_namespace(
                pair.server_ns, pair.server_addr, pair.client_ns, lab, loop
            )
        else:
            server_side = contextlib.nullcontext(
                LocalServer(
                    pair.server_addr,
                    scoped(pair.server_ns),
                    echo=lab.echo,
                    scope=scope_of(pair.server_ns),
                    netns=pair.server_ns,
                    fast_observers=fast_observers(pair.server_ns),
                    port_host=WILDCARD6 if pair.server_addr6 else None,
                )
            )
        clients = LocalClients(
            pair.client_addr,
            lab.clients,
            scoped(pair.client_ns),
            scope=scope_of(pair.client_ns),
            netns=pair.client_ns,
            fast_observers=fast_observers(pair.client_ns),
        )
        with server_side as server:
            yield Placed(
                topology,
                clients.observers,
                server=server,
                clients=clients,
                host=pair.server_addr,
                netns=NetnsDetails(
                    run_id=pair.run_id,
                    server_ns=pair.server_ns,
                    client_ns=pair.client_ns,
                    client_veth=pair.client_veth,
                    client_addr=pair.client_addr,
                    client_addr6=pair.client_addr6,
                ),
                host6=pair.server_addr6,
            )
