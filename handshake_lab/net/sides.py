"""Where each end of a lab lives, behind one interface the runner talks to.

A lab has a server side and a client side. Each can be placed:

* in this process, on loopback (the default);
* in this process, inside a network namespace (``--topology netns``): sockets are created with
  the thread switched into that namespace and stay there; the side's observers read that
  namespace's table;
* on another machine or namespace, behind the agent (``--peer``): the same verbs travel over
  the agent protocol (``handshake_lab.agent``).

The runner only sees ``ServerSide`` and ``ClientSide``. Outcomes are strings (``"ok"``, an errno
name, ...) exactly as in ``net.endpoints``; observations are per-source socket lists read on the
side's own machine or namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from handshake_lab.errors import MissingDependencyError, NetworkError
from handshake_lab.net.endpoints import Client, EchoServer, Stream, close_at_once, errno_name
from handshake_lab.net.forge import Expected, WireTap, expected_by, send_segments
from handshake_lab.net.raw import resend_segment, send_raw_syns
from handshake_lab.net.waits import wait_for
from handshake_lab.observe.base import Address, Observer, SocketRecord, family_of
from handshake_lab.observe.scoped import needs_main_thread
from handshake_lab.tcp.segments import Flags
from handshake_lab.topo import nft
from handshake_lab.topo.pair import read_tcp_counters, set_sysctl

Scope = Callable[[], AbstractContextManager[None]]
Snapshot = dict[str, list[SocketRecord]]
NON_ERROR = frozenset({"ok", "pending", "data", "EOF"})
StreamResult = tuple[str, str | None, dict[str, int]]
"""(outcome, received text, facts) of a stream action."""
RETRY_INTERVAL = 0.05
TAP_POLL = 0.01
"""How often a forge looks at the wire again while the server's ACK is still on its way."""
ForgeResult = tuple[str, dict[str, int]]


class ServerSide(Protocol):
    host: str

    async def reserve_port(self, port: int | None, taken: Collection[int]) -> int: ...

    async def listen(
        self,
        slot: str,
        port: int,
        *,
        backlog: int,
        reuse_address: bool | None,
        accept: bool,
        bind: str | None = None,
        v6only: bool | None = None,
    ) -> tuple[str, dict[str, int]]: ...

    async def accept(self, slot: str) -> str: ...

    async def unlisten(self, slot: str) -> str: ...

    async def stream_action(
        self,
        peer: Address,
        action: str,
        data: str | None,
        timeout: float,
        args: Mapping[str, object] | None = None,
    ) -> StreamResult: ...

    async def snapshot(self, ports: Collection[int], *, fast: bool = False) -> Snapshot: ...

    def observer_names(self) -> list[str]: ...

    async def close_all(self) -> None: ...

    async def set_close_on_eof(self, enabled: bool) -> None: ...

    async def ns_op(self, op: str, args: Mapping[str, object]) -> object: ...


class ClientSide(Protocol):
    host: str

    async def connect(
        self,
        name: str,
        server: Address,
        *,
        wait: bool,
        timeout: float,
        retry: bool = False,
        quiet_port: bool = False,
    ) -> str: ...

    def tuple_of(self, name: str) -> tuple[Address, Address] | None: ...

    async def stream_action(
        self,
        name: str,
        action: str,
        data: str | None,
        timeout: float,
        args: Mapping[str, object] | None = None,
    ) -> StreamResult: ...

    async def snapshot(self, ports: Collection[int], *, fast: bool = False) -> Snapshot: ...

    def observer_names(self) -> list[str]: ...

    async def close_all(self) -> None: ...

    async def churn(self, server: Address, count: int, timeout: float) -> tuple[str, int]: ...

    async def self_connect(self, name: str, port: int, timeout: float) -> str: ...

    async def stale_syn(self, name: str, server: Address, seq: int) -> str: ...

    async def reconnect(self, name: str, server: Address, timeout: float) -> str: ...

    async def syn_flood(
        self, name: str, server: Address, seqs: Sequence[int]
    ) -> tuple[str, list[int]]: ...

    async def open_tap(self, ports: Collection[int]) -> None: ...

    async def forge(
        self, name: str, flags: str, offset: int, count: int, timeout: float
    ) -> ForgeResult: ...

    async def ns_op(self, op: str, args: Mapping[str, object]) -> object: ...


WILDCARD6 = "::"
"""Where a lab of both families (``ip = "dual"``) looks for its ports: bound on ``::`` with
IPV6_V6ONLY off, a port is free on every IPv4 and IPv6 address of the namespace at once."""


def _probe(host: str) -> socket.socket:
    probe = socket.socket(family_of(host), socket.SOCK_STREAM)
    if host == WILDCARD6:
        # Both families whatever net.ipv6.bindv6only says; the probe changes no setting.
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return probe


def free_port(host: str) -> int:
    """A port nothing is bound to right now (the kernel picks it)."""
    with _probe(host) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear line, if ``--port`` cannot be used."""
    with _probe(host) as probe:
        try:
            probe.bind((host, port))
        except PermissionError as exc:
            raise NetworkError(
                f"port {port} needs privileges to bind on {host}; choose a port above 1023"
            ) from exc
        except OSError as exc:
            raise NetworkError(
                f"port {port} is in use on {host} (a listener, or a TIME_WAIT left by an earlier "
                "run for up to 60 s); choose another --port or omit it"
            ) from exc


def read_all(observers: Sequence[Observer], ports: Collection[int]) -> Snapshot:
    """One snapshot from each observer, in order (blocking: run it in a thread)."""
    wanted = sorted(set(ports))
    return {o.name: o.snapshot(wanted) for o in observers}


async def read_observers(observers: Sequence[Observer], ports: Collection[int]) -> Snapshot:
    """Read every observer without blocking the loop, except those that must run on the main
    thread (psutil inside a namespace, see ``observe.scoped``): those run inline, briefly."""
    wanted = sorted(set(ports))
    inline = [o for o in observers if needs_main_thread(o)]
    threaded = [o for o in observers if not needs_main_thread(o)]
    results = await asyncio.to_thread(read_all, threaded, wanted) if threaded else {}
    for observer in inline:
        results[observer.name] = observer.snapshot(wanted)
    return {o.name: results[o.name] for o in observers}


async def stream_action(
    stream: Stream,
    action: str,
    data: str | None,
    timeout: float,
    args: Mapping[str, object] | None = None,
) -> StreamResult:
    """Perform one of ``STREAM_ACTIONS`` on an established stream."""
    args = args or {}
    if action == "send":
        return await stream.send((data or "").encode()), None, {}
    if action == "recv":
        outcome, raw = await stream.wait_input(timeout)
        return outcome, raw.decode("utf-8", errors="replace") if outcome == "data" else None, {}
    if action == "send_eof":
        return stream.send_eof(), None, {}
    if action == "close":
        if stream.linger:
            outcome, facts = await stream.close_lingering()
            return outcome, None, facts
        return await stream.close(timeout), None, {}
    if action == "abort":
        return await stream.abort(), None, {}
    if action == "stop_reading":
        return stream.stop_reading(), None, {}
    if action == "read_all":
        outcome, read = await stream.read_all(timeout)
        return outcome, None, {"bytes": read}
    if action == "fill":
        outcome, facts = await stream.fill(timeout)
        return outcome, None, facts
    if action == "linger":
        return stream.set_linger(int(str(args["seconds"]))), None, {}
    if action == "keepalive":
        return (
            stream.set_keepalive(
                int(str(args["idle"])), int(str(args["interval"])), int(str(args["count"]))
            ),
            None,
            {},
        )
    if action == "user_timeout":
        return stream.set_user_timeout(int(str(args["ms"]))), None, {}
    if action == "queues":
        outcome, facts = stream.queues()
        return outcome, None, facts
    raise ValueError(f"not a stream action: {action}")


class VmOps(Protocol):
    """The same operations in a provisioned lab VM's own namespace (``topo.vmhold.VmOps``)."""

    def run(self, op: str, args: Mapping[str, object]) -> object: ...

    def close(self) -> None: ...


class NamespaceOps:
    """What a lab may do to one end's namespace: nft holds, sysctls, counters.

    Only in a namespace the tool made (``netns`` set): on loopback every operation would touch
    the host, which this tool never does, so they fail with a clear message instead. The one
    exception is ``vm``: on a lab VM that provisioning marked, placement hands in the VM's
    operations (``topo.vmhold``), used when there is no lab namespace.
    """

    def __init__(self, netns: str | None, scope: Scope, vm: VmOps | None = None) -> None:
        self.netns = netns
        self.scope = scope
        self.vm = vm
        self.holds: dict[str, object] = {}

    def _need_netns(self, what: str) -> str:
        if self.netns is None:
            raise MissingDependencyError(
                f"{what} works only inside the lab's namespaces: use --topology netns (root)"
            )
        return self.netns

    def run(self, op: str, args: Mapping[str, object]) -> object:
        """Perform ``op`` (blocking; call it in a thread). Returns the op's result."""
        if self.netns is None and self.vm is not None:
            if op == "add_hold":
                self.holds[str(args["id"])] = "vm"
            return self.vm.run(op, args)
        if op == "add_hold":
            ns = self._need_netns("a hold")
            count = args.get("count")
            handle = nft.add_hold(
                ns,
                str(args["kind"]),
                int(str(args["port"])),
                int(str(count)) if count is not None else None,
                hook="output" if args.get("hook") == "output" else "input",
            )
            self.holds[str(args["id"])] = handle
            return None
        if op == "release_hold":
            held = self.holds[str(args["id"])]
            assert isinstance(held, nft.HoldHandle)
            at = args.get("at")
            nft.release(held, int(str(at)) if at is not None else None)
            return None
        if op == "dropped":
            held = self.holds[str(args["id"])]
            assert isinstance(held, nft.HoldHandle)
            return nft.dropped(held)
        if op == "sysctl":
            ns = self._need_netns("sysctl")
            value = args["value"]
            set_sysctl(ns, str(args["key"]), value if isinstance(value, int) else str(value))
            return None
        if op == "counters":
            with self.scope():
                return read_tcp_counters()
        raise ValueError(f"unknown namespace operation {op!r}")

    async def arun(self, op: str, args: Mapping[str, object]) -> object:
        return await asyncio.to_thread(self.run, op, args)

    async def aclose(self) -> None:
        """Undo the VM's changes (holds, sysctls); lab namespaces go with the namespace."""
        if self.vm is not None:
            await asyncio.to_thread(self.vm.close)


class _LocalEnd:
    """What both local ends share: where their sockets live, how their table is read, and
    what may be done to their namespace."""

    def __init__(
        self,
        host: str,
        observers: Sequence[Observer],
        scope: Scope,
        netns: str | None,
        fast_observers: Sequence[Observer],
        vm_ops: VmOps | None = None,
    ) -> None:
        self.host = host
        self.observers = list(observers)
        self.fast_observers = list(fast_observers)
        self.scope = scope
        self.ops = NamespaceOps(netns, scope, vm_ops)

    async def snapshot(self, ports: Collection[int], *, fast: bool = False) -> Snapshot:
        """Every observer's view; with ``fast``, only the fast poller's (netlink) if any."""
        if fast and self.fast_observers:
            return await read_observers(self.fast_observers, ports)
        return await read_observers(self.observers, ports)

    def observer_names(self) -> list[str]:
        return [o.name for o in self.observers]

    @property
    def netns(self) -> str | None:
        """The namespace this end's sockets live in (None: the host's)."""
        return self.ops.netns

    async def ns_op(self, op: str, args: Mapping[str, object]) -> object:
        return await self.ops.arun(op, args)


class LocalServer(_LocalEnd):
    """The server side in this process: loopback, or inside a namespace via ``scope``."""

    def __init__(
        self,
        host: str,
        observers: Sequence[Observer],
        *,
        echo: bool = True,
        scope: Scope = contextlib.nullcontext,
        netns: str | None = None,
        fast_observers: Sequence[Observer] = (),
        vm_ops: VmOps | None = None,
        port_host: str | None = None,
    ) -> None:
        super().__init__(host, observers, scope, netns, fast_observers, vm_ops)
        self.server = EchoServer(host, echo=echo)
        # Where a port must be free: the server's address, or every address (WILDCARD6).
        self.port_host = port_host or host

    async def reserve_port(self, port: int | None, taken: Collection[int]) -> int:
        """``port`` if it can be bound here (else ``NetworkError``), or a free one."""
        with self.scope():
            if port is not None:
                check_port_free(self.port_host, port)
                return port
            chosen = free_port(self.port_host)
            while chosen in taken:
                chosen = free_port(self.port_host)
            return chosen

    async def listen(
        self,
        slot: str,
        port: int,
        *,
        backlog: int,
        reuse_address: bool | None,
        accept: bool,
        bind: str | None = None,
        v6only: bool | None = None,
    ) -> tuple[str, dict[str, int]]:
        # The thread stays in the namespace across the awaits of start_server: the runner runs
        # one step at a time, so no other socket is created meanwhile on this thread.
        with self.scope():
            return await self.server.listen(
                slot,
                port,
                backlog=backlog,
                reuse_address=reuse_address,
                accept=accept,
                host=bind,
                v6only=v6only,
            )

    async def accept(self, slot: str) -> str:
        with self.scope():
            return await self.server.accept(slot)

    async def unlisten(self, slot: str) -> str:
        return await self.server.unlisten(slot)

    async def stream_action(
        self,
        peer: Address,
        action: str,
        data: str | None,
        timeout: float,
        args: Mapping[str, object] | None = None,
    ) -> StreamResult:
        stream = await self.server.connection(peer, timeout)
        if stream is None:
            return "ENOTCONN", None, {}
        return await stream_action(stream, action, data, timeout, args)

    async def close_all(self) -> None:
        await self.server.close_all()
        await self.ops.aclose()

    async def set_close_on_eof(self, enabled: bool) -> None:
        self.server.close_on_eof = enabled


class LocalClients(_LocalEnd):
    """The lab's clients in this process: loopback, or inside a namespace via ``scope``."""

    def __init__(
        self,
        host: str,
        names: Sequence[str],
        observers: Sequence[Observer],
        *,
        scope: Scope = contextlib.nullcontext,
        netns: str | None = None,
        fast_observers: Sequence[Observer] = (),
        vm_ops: VmOps | None = None,
    ) -> None:
        super().__init__(host, observers, scope, netns, fast_observers, vm_ops)
        self.clients = {name: Client(name, host) for name in names}
        self.tap: WireTap | None = None

    async def connect(
        self,
        name: str,
        server: Address,
        *,
        wait: bool,
        timeout: float,
        retry: bool = False,
        quiet_port: bool = False,
    ) -> str:
        """Connect client ``name`` to ``server``. ``quiet_port``: from a port outside the
        ephemeral range, which no other program can take while the client is closed (for a
        client that will ``reconnect``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            client = self.clients[name]
            client.host = server.host
            with self.scope():
                outcome = await client.connect(
                    server.port, wait=wait, timeout=timeout, quiet_port=quiet_port
                )
            if not retry or outcome in NON_ERROR or loop.time() >= deadline:
                return outcome
            # A bounded retry: the kernel refused (e.g. EADDRNOTAVAIL until a TIME_WAIT may be
            # reused); start again with a fresh socket.
            await client.close_all()
            self.clients[name] = Client(name, self.host)
            await asyncio.sleep(RETRY_INTERVAL)

    def tuple_of(self, name: str) -> tuple[Address, Address] | None:
        client = self.clients[name]
        client.refresh_local()
        if client.local is None or client.remote is None:
            return None
        return client.local, client.remote

    async def stream_action(
        self,
        name: str,
        action: str,
        data: str | None,
        timeout: float,
        args: Mapping[str, object] | None = None,
    ) -> StreamResult:
        client = self.clients[name]
        if action == "close" and client.stream is None and client.sock is not None:
            # Closing a socket whose connect is still pending (SYN_SENT).
            await client.close_all()
            return "ok", None, {}
        outcome = await client.wait_connected(timeout)
        if client.stream is None:
            return (outcome if outcome not in NON_ERROR else "ENOTCONN"), None, {}
        return await stream_action(client.stream, action, data, timeout, args)

    async def close_all(self) -> None:
        for client in self.clients.values():
            await client.close_all()
        if self.tap is not None:
            self.tap.close()
        await self.ops.aclose()

    async def churn(self, server: Address, count: int, timeout: float) -> tuple[str, int]:
        """Open and close COUNT connections, the client closing first (each leaves a
        TIME_WAIT here). Returns (outcome, connections made): the first error stops it."""
        loop = asyncio.get_running_loop()
        made = 0
        for _ in range(count):
            with self.scope():
                sock = socket.socket(family_of(server.host), socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await wait_for(loop.sock_connect(sock, (server.host, server.port)), timeout)
                made += 1
                # FIN first; the server (close_on_eof) answers with its FIN; then close.
                sock.shutdown(socket.SHUT_WR)
                await wait_for(_wait_eof(loop, sock), timeout)
            except (OSError, TimeoutError) as exc:
                sock.close()
                return errno_name(exc), made
            sock.close()
        return "ok", made

    async def self_connect(self, name: str, port: int, timeout: float) -> str:
        """Connect a socket bound to ``port`` to its own address: a simultaneous open (the
        SYN arrives at the socket that sent it, in SYN_SENT, which answers SYN-ACK)."""
        client = self.clients[name]
        with self.scope():
            return await client.connect(port, wait=True, timeout=timeout, bind=(self.host, port))

    async def stale_syn(self, name: str, server: Address, seq: int) -> str:
        """A SYN from a port no socket here owns: the kernel will answer the SYN-ACK with RST."""
        outcome, _ports = await self.syn_flood(name, server, [seq])
        return outcome

    async def syn_flood(
        self, name: str, server: Address, seqs: Sequence[int]
    ) -> tuple[str, list[int]]:
        """A SYN from each of ``len(seqs)`` ports that no socket here owns, with those
        sequence numbers: a SYN flood (one SYN: an old duplicate). The ports are free ones the
        kernel picks, all held at once while picking so that they differ, then let go. The
        client ``name`` stands for the first of them. Returns (outcome, the ports used)."""
        client = self.clients[name]
        with self.scope():
            probes: list[socket.socket] = []
            try:
                for _ in seqs:
                    probe = socket.socket(family_of(self.host), socket.SOCK_STREAM)
                    probes.append(probe)
                    probe.bind((self.host, 0))
                ports = [int(p.getsockname()[1]) for p in probes]
            except OSError as exc:
                return errno_name(exc), []
            finally:
                for probe in probes:
                    probe.close()
            try:
                send_raw_syns(self.host, server.host, ports, server.port, seqs)
            except PermissionError as exc:
                raise MissingDependencyError(
                    "a raw SYN needs CAP_NET_RAW: run as root with --topology netns"
                ) from exc
            except OSError as exc:
                return errno_name(exc), []
        client.local = Address(self.host, ports[0])
        client.remote = server
        return "ok", ports

    async def open_tap(self, ports: Collection[int]) -> None:
        """Watch the lab's ports on this side's link from now on (``net.forge.WireTap``): a
        forge takes its sequence numbers from what the tap saw."""
        if self.tap is not None:
            return
        tap = WireTap(ports)
        with self.scope():
            tap.open()
        self.tap = tap

    async def forge(
        self, name: str, flags: str, offset: int, count: int, timeout: float
    ) -> ForgeResult:
        """Send ``count`` segments with client ``name``'s 4-tuple, as if from it, with
        sequence number RCV.NXT + ``offset``, RCV.NXT being the ACK number of the server's
        latest segment on the wire. Waits (up to ``timeout``) until that ACK covers all the
        client sent, so a server's delayed ACK cannot leave the number behind."""
        ends = self.tuple_of(name)
        if self.tap is None or ends is None:
            return "ENOTCONN", {}
        local, remote = ends
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        expected: Expected | None = None
        while True:
            packets = self.tap.read()
            expected = expected_by(packets, (local.host, local.port), (remote.host, remote.port))
            if (expected is not None and expected.settled) or loop.time() >= deadline:
                break
            await asyncio.sleep(TAP_POLL)
        if expected is None:
            return "ENODATA", {}  # the server has sent nothing on this connection
        seq = (expected.rcv_nxt + offset) % 2**32
        with self.scope():
            send_segments(
                (local.host, local.port),
                (remote.host, remote.port),
                seq=seq,
                flags=Flags[flags],
                count=count,
            )
        facts = {"rcv_nxt": expected.rcv_nxt, "seq": seq, "sent": count}
        if expected.window is not None:
            facts["window"] = expected.window
        return "ok", facts

    async def reconnect(self, name: str, server: Address, timeout: float) -> str:
        """A new socket bound to the address and port client ``name`` had, connected to
        ``server`` again: a new SYN for the very 4-tuple of its last connection. The old
        socket must be closed; nothing here holds its port (the passive closer keeps no
        TIME_WAIT), so no SO_REUSEADDR is needed."""
        old = self.clients[name]
        old.refresh_local()
        if old.local is None:
            return "ENOTCONN"
        local = old.local
        await old.close_all()
        client = Client(name, server.host)
        self.clients[name] = client
        with self.scope():
            return await client.connect(
                server.port, wait=True, timeout=timeout, bind=(local.host, local.port)
            )

    async def old_syn(self, name: str, server: Address, header: bytes) -> str:
        """Send ``header`` (the TCP header of a SYN client ``name`` once sent) again from
        its address, through a raw socket: a late duplicate of that SYN."""
        client = self.clients[name]
        client.refresh_local()
        if client.local is None:
            return "ENOTCONN"
        with self.scope():
            try:
                resend_segment(client.local.host, server.host, header)
            except PermissionError as exc:
                raise MissingDependencyError(
                    "a raw SYN needs CAP_NET_RAW: run as root with --topology netns"
                ) from exc
            except OSError as exc:
                return errno_name(exc)
        return "ok"


async def _wait_eof(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    while await loop.sock_recv(sock, 4096):
        pass


async def close_together(
    server: LocalServer, clients: LocalClients, name: str, timeout: float
) -> str:
    """Close client ``name``'s socket and the server's end of its connection in the same
    instant: one system call drops the last reference to both (``close_at_once``), so their
    FINs leave microseconds apart and the kernel arms both FIN retransmission timers in the
    same tick, on the same CPU; every later resend of the two FINs then leaves together too
    (what lets two held FINs cross: the simultaneous-close lab)."""
    client = clients.clients[name]
    outcome = await client.wait_connected(timeout)
    ends = clients.tuple_of(name)
    if client.stream is None or ends is None:
        return outcome if outcome not in NON_ERROR else "ENOTCONN"
    accepted = await server.server.connection(ends[0], timeout)
    if accepted is None:
        return "ENOTCONN"
    try:
        await close_at_once((client.stream, accepted), timeout)
    except OSError as exc:
        return errno_name(exc)
    return "ok"
