"""The two ends of a lab as a placement built them, with what the run needs to know of them."""

from __future__ import annotations

from dataclasses import dataclass

from handshake_lab.net.sides import ClientSide, ServerSide
from handshake_lab.observe.base import Observer
from handshake_lab.placement.topology import Topology

LOOPBACK_HOST = "127.0.0.1"
LOOPBACK_HOST6 = "::1"


def loopback_host(ip: int) -> str:
    """The loopback address of IP version ``ip`` (4 or 6)."""
    return LOOPBACK_HOST6 if ip == 6 else LOOPBACK_HOST


@dataclass(frozen=True, slots=True)
class NetnsDetails:
    """The namespaces a ``netns``/``netns-agent`` placement made for this run."""

    run_id: str
    server_ns: str
    client_ns: str
    client_veth: str
    client_addr: str


@dataclass(frozen=True, slots=True)
class CaptureTarget:
    """Where the run's segments can be captured: an interface, in a namespace or here."""

    interface: str
    netns: str | None
    hosts: frozenset[str]


@dataclass(frozen=True, slots=True)
class Placed:
    """The two ends of a lab; ``server``/``clients`` None means loopback in this process."""

    topology: Topology
    observers: list[Observer]
    server: ServerSide | None = None
    clients: ClientSide | None = None
    host: str = LOOPBACK_HOST
    netns: NetnsDetails | None = None
    shared_table: bool = False

    @property
    def run_id(self) -> str | None:
        return self.netns.run_id if self.netns is not None else None

    @property
    def capture(self) -> CaptureTarget:
        """In namespaces: the client's veth (both directions cross it). Elsewhere: lo."""
        if self.netns is not None:
            return CaptureTarget(
                self.netns.client_veth,
                self.netns.client_ns,
                frozenset({self.host, self.netns.client_addr}),
            )
        return CaptureTarget("lo", None, frozenset({self.host}))
