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
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from handshake_lab.errors import NetworkError
from handshake_lab.net.endpoints import Client, EchoServer, Stream
from handshake_lab.observe.base import Address, Observer, SocketRecord
from handshake_lab.observe.scoped import needs_main_thread

Scope = Callable[[], AbstractContextManager[None]]
Snapshot = dict[str, list[SocketRecord]]
STREAM_ACTIONS = frozenset({"send", "recv", "send_eof", "close", "abort"})
NON_ERROR = frozenset({"ok", "pending", "data", "EOF"})


class ServerSide(Protocol):
    host: str

    async def reserve_port(self, port: int | None, taken: Collection[int]) -> int: ...

    async def listen(
        self, slot: str, port: int, *, backlog: int, reuse_address: bool | None, accept: bool
    ) -> tuple[str, dict[str, int]]: ...

    async def accept(self, slot: str) -> str: ...

    async def unlisten(self, slot: str) -> str: ...

    async def stream_action(
        self, peer: Address, action: str, data: str | None, timeout: float
    ) -> tuple[str, str | None]: ...

    async def snapshot(self, ports: Collection[int]) -> Snapshot: ...

    def observer_names(self) -> list[str]: ...

    async def close_all(self) -> None: ...


class ClientSide(Protocol):
    host: str

    async def connect(self, name: str, server: Address, *, wait: bool, timeout: float) -> str: ...

    def tuple_of(self, name: str) -> tuple[Address, Address] | None: ...

    async def stream_action(
        self, name: str, action: str, data: str | None, timeout: float
    ) -> tuple[str, str | None]: ...

    async def snapshot(self, ports: Collection[int]) -> Snapshot: ...

    def observer_names(self) -> list[str]: ...

    async def close_all(self) -> None: ...


def free_port(host: str) -> int:
    """A port nothing is bound to right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear line, if ``--port`` cannot be used."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
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
    stream: Stream, action: str, data: str | None, timeout: float
) -> tuple[str, str | None]:
    """Perform one of ``STREAM_ACTIONS`` on an established stream."""
    if action == "send":
        return await stream.send((data or "").encode()), None
    if action == "recv":
        outcome, raw = await stream.wait_input(timeout)
        return outcome, raw.decode("utf-8", errors="replace") if outcome == "data" else None
    if action == "send_eof":
        return stream.send_eof(), None
    if action == "close":
        return await stream.close(timeout), None
    if action == "abort":
        return await stream.abort(), None
    raise ValueError(f"not a stream action: {action}")


class LocalServer:
    """The server side in this process: loopback, or inside a namespace via ``scope``."""

    def __init__(
        self,
        host: str,
        observers: Sequence[Observer],
        *,
        echo: bool = True,
        scope: Scope = contextlib.nullcontext,
    ) -> None:
        self.host = host
        self.observers = list(observers)
        self.scope = scope
        self.server = EchoServer(host, echo=echo)

    async def reserve_port(self, port: int | None, taken: Collection[int]) -> int:
        """``port`` if it can be bound here (else ``NetworkError``), or a free one."""
        with self.scope():
            if port is not None:
                check_port_free(self.host, port)
                return port
            chosen = free_port(self.host)
            while chosen in taken:
                chosen = free_port(self.host)
            return chosen

    async def listen(
        self, slot: str, port: int, *, backlog: int, reuse_address: bool | None, accept: bool
    ) -> tuple[str, dict[str, int]]:
        # The thread stays in the namespace across the awaits of start_server: the runner runs
        # one step at a time, so no other socket is created meanwhile on this thread.
        with self.scope():
            return await self.server.listen(
                slot, port, backlog=backlog, reuse_address=reuse_address, accept=accept
            )

    async def accept(self, slot: str) -> str:
        with self.scope():
            return await self.server.accept(slot)

    async def unlisten(self, slot: str) -> str:
        return await self.server.unlisten(slot)

    async def stream_action(
        self, peer: Address, action: str, data: str | None, timeout: float
    ) -> tuple[str, str | None]:
        stream = await self.server.connection(peer, timeout)
        if stream is None:
            return "ENOTCONN", None
        return await stream_action(stream, action, data, timeout)

    async def snapshot(self, ports: Collection[int]) -> Snapshot:
        return await read_observers(self.observers, ports)

    def observer_names(self) -> list[str]:
        return [o.name for o in self.observers]

    async def close_all(self) -> None:
        await self.server.close_all()


class LocalClients:
    """The lab's clients in this process: loopback, or inside a namespace via ``scope``."""

    def __init__(
        self,
        host: str,
        names: Sequence[str],
        observers: Sequence[Observer],
        *,
        scope: Scope = contextlib.nullcontext,
    ) -> None:
        self.host = host
        self.observers = list(observers)
        self.scope = scope
        self.clients = {name: Client(name, host) for name in names}

    async def connect(self, name: str, server: Address, *, wait: bool, timeout: float) -> str:
        client = self.clients[name]
        client.host = server.host
        with self.scope():
            return await client.connect(server.port, wait=wait, timeout=timeout)

    def tuple_of(self, name: str) -> tuple[Address, Address] | None:
        client = self.clients[name]
        client.refresh_local()
        if client.local is None or client.remote is None:
            return None
        return client.local, client.remote

    async def stream_action(
        self, name: str, action: str, data: str | None, timeout: float
    ) -> tuple[str, str | None]:
        client = self.clients[name]
        if action == "close" and client.stream is None and client.sock is not None:
            # Closing a socket whose connect is still pending (SYN_SENT).
            await client.close_all()
            return "ok", None
        outcome = await client.wait_connected(timeout)
        if client.stream is None:
            return (outcome if outcome not in NON_ERROR else "ENOTCONN"), None
        return await stream_action(client.stream, action, data, timeout)

    async def snapshot(self, ports: Collection[int]) -> Snapshot:
        return await read_observers(self.observers, ports)

    def observer_names(self) -> list[str]:
        return [o.name for o in self.observers]

    async def close_all(self) -> None:
        for client in self.clients.values():
            await client.close_all()
