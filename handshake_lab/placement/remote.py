"""``remote`` (``run --peer HOST[:PORT]``): the server side at an agent on another machine.

Checks first (blocking, a few ms) that the agent answers and accepts the token, so a wrong token
or an unreachable agent fails before anything is created. The clients' states are read on this
machine, the server's on the agent's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from handshake_lab.agent.client import DEFAULT_AGENT_PORT, RemoteServer, parse_peer, probe_agent
from handshake_lab.agent.token import TokenError, load_token
from handshake_lab.errors import MissingDependencyError
from handshake_lab.net.sides import LocalClients
from handshake_lab.observe.defaults import default_observers, fast_observers
from handshake_lab.placement.placed import Placed
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import Lab
from handshake_lab.topo.vmhold import VmOps, lab_needs_vm_ops, vm_holds_allowed


def remote_sides(peer: str, token: str, lab: Lab) -> tuple[RemoteServer, LocalClients]:
    """The server side at the agent ``peer``, the clients here."""
    host, port = parse_peer(peer, DEFAULT_AGENT_PORT)
    info, local_addr = probe_agent(host, port, token)
    vm_ops = vm_sides_ops(lab, info, peer)
    lab_host = info.get("host")
    names = info.get("observers")
    server = RemoteServer(
        host,
        port,
        token,
        echo=lab.echo,
        lab_name=lab.name,
        lab_host=lab_host if isinstance(lab_host, str) else None,
        observers=[str(n) for n in names] if isinstance(names, list) else None,
    )
    clients = LocalClients(
        local_addr,
        lab.clients,
        default_observers(),
        fast_observers=fast_observers(),
        vm_ops=vm_ops,
    )
    return server, clients


def remote_step_set() -> str:
    """The step set a ``--peer`` run takes: the namespace steps (holds, sysctls) on a lab VM
    that vagrant/provision.sh provisioned (``topo.vmhold``), the loopback ones elsewhere."""
    return Topology.NETNS_AGENT.step_set if vm_holds_allowed() else Topology.REMOTE.step_set


def vm_sides_ops(lab: Lab, info: Mapping[str, object], peer: str) -> VmOps | None:
    """On a provisioned lab VM: this VM's operations for the run, with the lab's client
    sysctls applied (restored by the clients' ``close_all``); None elsewhere.

    A lab that changes a namespace needs both VMs marked: it is refused here, before step 1,
    when the agent's VM is not (``vm_holds`` in its hello), or when the lab wants sysctls on
    the server's side, which the agent sets only through steps.
    """
    if not vm_holds_allowed():
        return None
    steps = lab.steps_for(remote_step_set())
    if lab_needs_vm_ops(steps, lab.sysctls):
        if info.get("vm_holds") is not True:
            raise MissingDependencyError(
                f"lab {lab.name} holds segments on both VMs, but the agent at {peer} is not "
                "on a VM that vagrant/provision.sh provisioned"
            )
        if lab.sysctls.get("server"):
            raise MissingDependencyError(
                f"lab {lab.name} sets server sysctls, which --peer cannot apply before step 1"
            )
    ops = VmOps()
    try:
        for key, value in lab.sysctls.get("client", {}).items():
            ops.run("sysctl", {"key": key, "value": value})
    except BaseException:
        ops.close()
        raise
    return ops


def remote(peer: str, token_file: Path | None, lab: Lab) -> Placed:
    token = load_token(token_file)
    if token is None:
        raise TokenError("--peer needs the agent's token: set HSLAB_AGENT_TOKEN or --token-file")
    server, clients = remote_sides(peer, token, lab)
    return Placed(
        Topology.REMOTE, clients.observers, server=server, clients=clients, host=server.host
    )
