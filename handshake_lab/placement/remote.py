"""``remote`` (``run --peer HOST[:PORT]``): the server side at an agent on another machine.

Checks first (blocking, a few ms) that the agent answers and accepts the token, so a wrong token
or an unreachable agent fails before anything is created. The clients' states are read on this
machine, the server's on the agent's.
"""

from __future__ import annotations

from pathlib import Path

from handshake_lab.agent.client import DEFAULT_AGENT_PORT, RemoteServer, parse_peer, probe_agent
from handshake_lab.agent.token import TokenError, load_token
from handshake_lab.net.sides import LocalClients
from handshake_lab.observe.defaults import default_observers, fast_observers
from handshake_lab.placement.placed import Placed
from handshake_lab.placement.topology import Topology
from handshake_lab.spec.model import Lab


def remote_sides(peer: str, token: str, lab: Lab) -> tuple[RemoteServer, LocalClients]:
    """The server side at the agent ``peer``, the clients here."""
    host, port = parse_peer(peer, DEFAULT_AGENT_PORT)
    info, local_addr = probe_agent(host, port, token)
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
        local_addr, lab.clients, default_observers(), fast_observers=fast_observers()
    )
    return server, clients


def remote(peer: str, token_file: Path | None, lab: Lab) -> Placed:
    token = load_token(token_file)
    if token is None:
        raise TokenError("--peer needs the agent's token: set HSLAB_AGENT_TOKEN or --token-file")
    server, clients = remote_sides(peer, token, lab)
    return Placed(
        Topology.REMOTE, clients.observers, server=server, clients=clients, host=server.host
    )
