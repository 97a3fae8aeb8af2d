"""``place()``: the one function the engine calls to build (and afterwards remove) a lab's two
ends, whatever the topology."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from handshake_lab.errors import UsageError
from handshake_lab.observe.base import Observer
from handshake_lab.placement.loopback import loopback
from handshake_lab.placement.netns import namespaces
from handshake_lab.placement.placed import Placed
from handshake_lab.placement.remote import remote, remote_step_set
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import DUAL_STACK, Lab
from handshake_lab.topo.netem import Link

ObserverFactory = Callable[[], list[Observer]]


def step_set(topology: Topology) -> str:
    """Which of a lab's step sets a placement runs (``Topology.step_set``, and for ``--peer``
    the namespace steps where both ends are provisioned lab VMs: ``remote.remote_step_set``)."""
    return remote_step_set() if topology is Topology.REMOTE else topology.step_set


def ip_for(lab: Lab, ip: int) -> int:
    """The IP version a run of ``lab`` places and observes: ``ip``, or both families
    (``DUAL_STACK``) for a lab that says ``ip = "dual"``, whose steps name each socket's
    family (``--ip 6`` for it is refused: the CLI says so before, in its own words)."""
    if not lab.dual:
        return ip
    if ip == 6:
        raise UsageError(f"lab {lab.name} uses IPv4 and IPv6 together: not --ip 6")
    return DUAL_STACK


def dual_refusal(name: str, topology: Topology) -> str:
    """Why a lab of both families (``ip = "dual"``) does not run at an agent."""
    return (
        f"lab {name} uses IPv4 and IPv6 together, which an agent's server (one address) "
        f"cannot: it runs with --topology loopback or netns, not {topology.option}"
    )


def peer_refusal(lab: Lab) -> str | None:
    """Why ``lab`` does not run across the two lab VMs (``--peer``), by design; None if it does.

    A lab of both families needs two server addresses (``dual_refusal``). A SYN-flood lab
    shows the SYN-queue reserve running out for a peer the server's kernel has never seen: a
    lab VM remembers the other from every earlier run (``ip tcp_metrics``: a "proven" peer,
    ``tcp_peer_is_proven``), and a proven peer keeps that reserve, so the counts would not be
    the lesson's. Both run with ``--topology netns`` on one VM."""
    if lab.dual:
        return dual_refusal(lab.name, Topology.REMOTE)
    if any(step.action == "syn_flood" for step in lab.steps):
        return (
            f"lab {lab.name} needs a server that has never seen the client, and a lab VM "
            "remembers the other from earlier connections (tcp_metrics: a proven peer keeps "
            "the SYN-queue reserve the lab runs out of): run it with --topology netns"
        )
    return None


def link_refusal(topology: Topology) -> str | None:
    """Why ``--delay``/``--loss`` cannot run in ``topology`` (one line), or None.

    netem goes only on the veth ends of the tool's own namespaces: never on the host's ``lo``
    (loopback), and never on a VM's own interface (``--peer``: the agent's and the client's
    sockets live in the VMs' own namespaces, which the tool does not own)."""
    if topology is Topology.LOOPBACK:
        return (
            "--delay/--loss need --topology netns: they slow the lab's own veth pair, never "
            "this machine's lo"
        )
    if topology is Topology.REMOTE:
        return (
            "--delay/--loss cannot run with --peer: the VMs' own interfaces are not the lab's; "
            "run --topology netns on one VM instead"
        )
    return None


@contextmanager
def place(
    topology: Topology,
    lab: Lab,
    make_observers: ObserverFactory,
    *,
    loop: str = "asyncio",
    peer: str | None = None,
    token_file: Path | None = None,
    sysctls: Mapping[str, Mapping[str, str | int]] | None = None,
    ip: int = 4,
    link: Link | None = None,
) -> Iterator[Placed]:
    """Yield the lab's two ends for ``topology`` on IP version ``ip`` (4 or 6; both for a
    dual lab, ``ip_for``); remove whatever was created on exit. IPv6 runs on loopback and in
    the tool's own namespaces only; so does a ``link`` (``--delay``/``--loss``: see
    ``link_refusal``)."""
    ip = ip_for(lab, ip)
    if ip not in (4, 6, DUAL_STACK):
        raise ValueError(f"IP version must be 4, 6 or {DUAL_STACK} (both), not {ip!r}")
    if link is not None and link.active:
        refusal = link_refusal(topology)
        if refusal is not None:
            raise UsageError(refusal)
    if ip == 6 and topology is Topology.REMOTE:
        raise UsageError("--peer runs on IPv4 only; --ip 6 needs a --topology")
    refusal = peer_refusal(lab) if topology is Topology.REMOTE else None
    if refusal is None and ip == DUAL_STACK and topology is Topology.NETNS_AGENT:
        refusal = dual_refusal(lab.name, topology)
    if refusal is not None:
        raise UsageError(refusal)
    if topology is Topology.LOOPBACK:
        yield loopback(lab, make_observers, ip)
    elif topology is Topology.REMOTE:
        if peer is None:
            raise ValueError("the remote placement needs a peer")
        yield remote(peer, token_file, lab)
    else:
        with namespaces(
            topology, lab, make_observers, sysctls=sysctls, loop=loop, ip=ip, link=link
        ) as ends:
            yield ends
