"""The remote agent: the server side of labs over a small, versioned control protocol.

``handshake-lab agent`` (``agent.server``) runs on the server machine or inside a lab namespace;
``RemoteServer`` (``agent.client``) is the runner's ``ServerSide`` that drives it. The wire
format is ``agent.protocol``, specified in ``docs/agent.md``.
"""

from handshake_lab.agent.client import DEFAULT_AGENT_PORT, RemoteServer, parse_peer, probe_agent
from handshake_lab.agent.protocol import MAX_LINE, PROTOCOL_VERSION
from handshake_lab.agent.server import Agent, AgentConfig

__all__ = [
    "DEFAULT_AGENT_PORT",
    "MAX_LINE",
    "PROTOCOL_VERSION",
    "Agent",
    "AgentConfig",
    "RemoteServer",
    "parse_peer",
    "probe_agent",
]
