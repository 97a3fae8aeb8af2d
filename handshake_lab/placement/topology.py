"""Where the two ends of a lab live: the one enum, parsed once at the CLI edge.

- ``loopback``: both ends in this process on 127.0.0.1 (``--ip 6``: ::1), one socket table.
- ``netns``: a server and a client network namespace joined by a veth pair (198.18.0.0/24;
  ``--ip 6``: 2001:db8:198:18::/64).
- ``netns-agent``: as netns, with the server side run by an agent process inside its
  namespace: the two-machine path, exercised on one machine.
- ``remote``: the server side at an agent on another machine (``run --peer``).

A lab file names *step sets* (``topologies = [...]``, ``only = "netns"``): which steps run where.
``Topology.step_set`` says which one each placement runs: a namespace agent can hold segments
like netns but has its server in another process (step set ``netns-agent``); a remote peer
runs the loopback steps, or the ``netns-agent`` ones between provisioned lab VMs.
"""

from __future__ import annotations

from enum import StrEnum


class Topology(StrEnum):
    LOOPBACK = "loopback"
    NETNS = "netns"
    NETNS_AGENT = "netns-agent"
    REMOTE = "remote"

    @property
    def step_set(self) -> str:
        """The lab step set (``spec.model.STEP_SETS``) this placement runs: a namespace agent
        holds segments like netns, but its server is not in this process."""
        if self is Topology.NETNS_AGENT:
            return "netns-agent"
        return "netns" if self is Topology.NETNS else "loopback"

    @property
    def in_namespaces(self) -> bool:
        """Both ends in network namespaces this tool makes (and removes)."""
        return self in {Topology.NETNS, Topology.NETNS_AGENT}

    @property
    def option(self) -> str:
        """How a user asks for it on the command line."""
        return "--peer" if self is Topology.REMOTE else f"--topology {self.value}"


CLI_TOPOLOGIES: tuple[Topology, ...] = (Topology.LOOPBACK, Topology.NETNS, Topology.NETNS_AGENT)
"""The values of ``run --topology`` (``remote`` is chosen by ``--peer``)."""
