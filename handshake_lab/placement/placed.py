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
    client_addr6: str | None = None  # a run of both families: the client's IPv6 address too


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
    host6: str | None = None
    """The server's IPv6 address in a run of both families (``ip = "dual"``: ``host`` is
    then the IPv4 one); None in a run of one family."""

    @property
    def run_id(self) -> str | None:
        return self.netns.run_id if self.netns is not None else None

    @property
    def capture(self) -> CaptureTarget:
        """In namespaces: the client's veth (both directions cross it). Elsewhere: lo."""
        servers = {self.host} | ({self.host6} if self.host6 else set())
        if self.netns is not None:
            clients = {self.netns.client_addr, self.netns.client_addr6} - {None}
            return CaptureTarget(
                self.netns.client_veth,
                self.netns.client_ns,
                frozenset({*servers, *(c for c in clients if c)}),
            )
        return CaptureTarget("lo", None, frozenset(servers))
