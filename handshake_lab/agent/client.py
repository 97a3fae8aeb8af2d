"""The runner's side of the agent protocol: ``RemoteServer``, a ``ServerSide`` over the wire.

The runner cannot tell ``RemoteServer`` from ``LocalServer``: the same verbs, the same outcome
strings, and snapshots as ``{source: [SocketRecord]}`` read by the agent on its own machine (or
namespace). ``host`` is the agent's lab address, which the agent states in its ``hello`` reply.

The connection is opened lazily, inside the run's event loop (asyncio or uvloop), by the first
call. Requests are serialised (one in flight at a time) and carry an increasing ``seq``; while
the runner is idle (``--step`` waiting for Enter) a keepalive ``ping`` keeps the agent from
dropping the session as silent.

Every failure of the agent or the network - refused, reset, closed, silent, a malformed or
refused reply - raises ``NetworkError`` (exit code 7) with one line naming the agent and the
verb. ``close_all`` never raises: when the agent has vanished its sockets went with it, and the
lab's local cleanup must still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Collection, Mapping
from typing import Any

from handshake_lab.agent.protocol import (
    MAX_REPLY,
    PROTOCOL_VERSION,
    ProtocolError,
    Reply,
    decode_greeting,
    decode_reply,
    encode_request,
    proof,
    snapshot_from_doc,
)
from handshake_lab.errors import MissingDependencyError, NetworkError
from handshake_lab.net.sides import Scope, Snapshot
from handshake_lab.net.waits import cancel_and_wait, wait_for
from handshake_lab.observe.base import Address, family_of

DEFAULT_AGENT_PORT = 7878
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 15.0
"""How long a reply may take, on top of any wait the request itself asks for."""


def parse_peer(peer: str, default_port: int = DEFAULT_AGENT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); ``NetworkError`` for anything else."""
    host, sep, port_text = peer.strip().rpartition(":")
    if not sep:
        host, port_text = peer.strip(), str(default_port)
    if not host or any(c.isspace() for c in host) or host.startswith("["):
        raise NetworkError(f"--peer {peer!r}: expected HOST or HOST:PORT (IPv4 or a name)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise NetworkError(f"--peer {peer!r}: port must be a number in 1..65535")
    return host, int(port_text)


def _reason(exc: OSError) -> str:
    """``connection refused`` rather than asyncio's ``Connect call failed (...)``."""
    if exc.errno:
        return f"{os.strerror(exc.errno).lower()} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return str(exc) or type(exc).__name__


async def _resolve(host: str, port: int) -> tuple[str, int]:
    """The IPv4 address of ``host`` (a name is looked up: a peer is IPv4 only), or ``host``
    itself if it is an IPv6 literal (the namespace agent of ``run --ip 6``)."""
    loop = asyncio.get_running_loop()
    family = family_of(host)
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"no IPv4 address for {host}")
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])


def _vanished(peer: str, verb: str, detail: str) -> NetworkError:
    return NetworkError(f"agent {peer}: {detail} during {verb}; the agent released its side")


class RemoteServer:
    """The server side of a lab, carried out by a ``handshake-lab agent`` at ``host:port``."""

    def __init__(
        self,
        agent_host: str,
        agent_port: int,
        token: str,
        *,
        echo: bool = True,
        lab_name: str = "",
        lab_host: str | None = None,
        observers: list[str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        scope: Scope = contextlib.nullcontext,
    ) -> None:
        self.agent_host = agent_host
        self.agent_port = agent_port
        self.peer = f"{agent_host}:{agent_port}"
        self.token = token
        self.echo = echo
        self.lab_name = lab_name
        self.host = lab_host or agent_host
        self.info: dict[str, Any] = {}
        self._observer_names = list(observers or [])
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.scope = scope
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock: asyncio.Lock | None = None
        self._seq = 0
        self._broken: NetworkError | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._last_used = 0.0

    # -- connection -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the control connection, authenticate and begin a lab session."""
        if self._writer is not None:
            return
        if self._broken is not None:
            raise self._broken
        sock: socket.socket | None = None
        try:
            # The control socket is created in this side's namespace (``scope``): with the
            # netns topology the runner reaches the agent across the veth, like a real client.
            with self.scope():
                sock = socket.socket(family_of(self.agent_host), socket.SOCK_STREAM)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            address = await _resolve(self.agent_host, self.agent_port)
            await wait_for(loop.sock_connect(sock, address), self.connect_timeout)
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_REPLY)
        except TimeoutError as exc:
            if sock is not None:
                sock.close()
            raise NetworkError(
                f"agent {self.peer}: no answer within {self.connect_timeout:g} s "
                "(is 'handshake-lab agent' running there, and the port open?)"
            ) from exc
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise NetworkError(
                f"cannot reach agent {self.peer}: {_reason(exc)} "
                "(is 'handshake-lab agent' running there?)"
            ) from exc
        self._reader, self._writer = reader, writer
        self._seq = 0
        try:
            greeting = decode_greeting(await self._read_line("greeting", self.connect_timeout))
            if PROTOCOL_VERSION not in greeting.versions:
                raise NetworkError(
                    f"agent {self.peer} speaks protocol {greeting.versions}, "
                    f"this client speaks {PROTOCOL_VERSION}: upgrade one of them"
                )
            hello = await self._exchange(
                "hello", {"proof": proof(self.token, greeting.nonce), "client": "runner"}
            )
            self._learn(hello)
            self._learn(await self._exchange("begin", {"echo": self.echo, "lab": self.lab_name}))
        except ProtocolError as exc:
            self._drop()
            raise NetworkError(f"agent {self.peer}: malformed greeting: {exc.message}") from exc
        except BaseException:
            self._drop()
            raise
        self._last_used = loop.time()
        idle = self.info.get("limits", {}).get("idle_timeout")
        if isinstance(idle, int | float) and idle > 0:
            self._keepalive = asyncio.ensure_future(self._keep_alive(float(idle) / 3))

    def _learn(self, result: Mapping[str, Any]) -> None:
        self.info = dict(result)
        host = result.get("host")
        if isinstance(host, str) and host:
            self.host = host
        names = result.get("observers")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            self._observer_names = list(names)

    async def _keep_alive(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while self._writer is not None and self._broken is None:
            wait = self._last_used + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self._call("ping", {})
            except NetworkError:
                return

    def _drop(self) -> None:
        """Forget the connection (abortively: the agent sees the session end at once)."""
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        self._keepalive = None
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def _read_line(self, verb: str, timeout: float) -> bytes:
        assert self._reader is not None
        try:
            line = await wait_for(self._reader.readline(), timeout)
        except TimeoutError as exc:
            raise self._break(verb, f"no reply within {timeout:g} s") from exc
        except ValueError as exc:  # longer than the StreamReader limit
            raise self._break(verb, f"a reply longer than {MAX_REPLY} bytes") from exc
        except OSError as exc:
            raise self._break(verb, f"connection lost ({exc.strerror or exc})") from exc
        if not line.endswith(b"\n"):
            raise self._break(verb, "the agent closed the connection (stopped or killed?)")
        return line[:-1]

    def _break(self, verb: str, detail: str) -> NetworkError:
        error = _vanished(self.peer, verb, detail)
        self._broken = error
        self._drop()
        return error

    async def _exchange(
        self, verb: str, args: Mapping[str, object], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request and read its reply (the caller holds the lock)."""
        assert self._writer is not None
        self._seq += 1
        seq = self._seq
        try:
            self._writer.write(encode_request(seq, verb, args))
            await wait_for(self._writer.drain(), self.request_timeout)
        except TimeoutError as exc:
            raise self._break(verb, "the agent does not read its requests") from exc
        except OSError as exc:
            raise self._break(verb, f"connection lost ({exc.strerror or exc})") from exc
        line = await self._read_line(verb, (timeout or 0.0) + self.request_timeout)
        try:
            reply: Reply = decode_reply(line)
        except ProtocolError as exc:
            raise self._break(verb, f"malformed reply ({exc.message})") from exc
        if not reply.ok:
            if reply.code in {"auth", "version", "busy"}:
                self._drop()
                hint = (
                    " (check the token: file or HSLAB_AGENT_TOKEN)" if reply.code == "auth" else ""
                )
                raise NetworkError(f"agent {self.peer} refused {verb}: {reply.message}{hint}")
            if reply.code == "unavailable":
                raise MissingDependencyError(f"agent {self.peer}: {reply.message}")
            raise NetworkError(f"agent {self.peer}: {verb}: {reply.message} [{reply.code}]")
        if reply.seq != seq:
            raise self._break(verb, f"a reply for seq {reply.seq}, expected {seq}")
        return dict(reply.result)

    async def _call(
        self, verb: str, args: Mapping[str, object], timeout: float | None = None
    ) -> dict[str, Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._broken is not None:
                raise self._broken
            await self.connect()
            result = await self._exchange(verb, args, timeout)
            self._last_used = asyncio.get_running_loop().time()
            return result

    # -- ServerSide -------------------------------------------------------------------------

    async def reserve_port(self, port: int | None, taken: Collection[int]) -> int:
        result = await self._call("reserve_port", {"port": port, "taken": sorted(taken)})
        return _int(result, "port", self.peer)

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
        if bind is not None or v6only is not None:
            # An agent serves one address of one family; placement refuses ip = "dual" labs
            # there before step 1, so this only guards the protocol.
            return "EAFNOSUPPORT", {}
        result = await self._call(
            "listen",
            {
                "slot": slot,
                "port": port,
                "backlog": backlog,
                "reuse_address": reuse_address,
                "accept": accept,
            },
        )
        facts = result.get("facts", {})
        if not isinstance(facts, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in facts.values()
        ):
            raise NetworkError(f"agent {self.peer}: malformed listen facts")
        return _str(result, "outcome", self.peer), {str(k): int(v) for k, v in facts.items()}

    async def accept(self, slot: str) -> str:
        return _str(await self._call("accept", {"slot": slot}), "outcome", self.peer)

    async def unlisten(self, slot: str) -> str:
        return _str(await self._call("unlisten", {"slot": slot}), "outcome", self.peer)

    async def stream_action(
        self,
        peer: Address,
        action: str,
        data: str | None,
        timeout: float,
        args: Mapping[str, object] | None = None,
    ) -> tuple[str, str | None, dict[str, int]]:
        request: dict[str, object] = {
            "peer": {"host": peer.host, "port": peer.port},
            "action": action,
            "data": data,
            "timeout": timeout,
        }
        if args:
            # Only when there are any: an agent of an earlier version still answers the rest.
            request["args"] = dict(args)
        # A lingering close may block its full linger time on the agent's side.
        result = await self._call(
            "stream_action", request, timeout=timeout + float(str((args or {}).get("seconds", 0)))
        )
        text = result.get("data")
        if text is not None and not isinstance(text, str):
            raise NetworkError(f"agent {self.peer}: malformed stream data")
        facts = result.get("facts", {})
        if not isinstance(facts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in facts.items()
        ):
            raise NetworkError(f"agent {self.peer}: malformed stream facts")
        return _str(result, "outcome", self.peer), text, dict(facts)

    async def snapshot(self, ports: Collection[int], *, fast: bool = False) -> Snapshot:
        result = await self._call("snapshot", {"ports": sorted(set(ports)), "fast": fast})
        try:
            return snapshot_from_doc(result.get("sources"))
        except ProtocolError as exc:
            raise NetworkError(f"agent {self.peer}: malformed snapshot: {exc.message}") from exc

    def observer_names(self) -> list[str]:
        return list(self._observer_names)

    async def close_all(self) -> None:
        """Release the agent's side and end the session. Never raises."""
        if self._writer is not None and self._broken is None:
            with contextlib.suppress(NetworkError, OSError):
                await self._call("close_all", {})
                await self._call("bye", {})
        if self._writer is not None:
            writer = self._writer
            if self._keepalive is not None:
                await cancel_and_wait(self._keepalive)
                self._keepalive = None
            self._reader = self._writer = None
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                await wait_for(writer.wait_closed(), 1.0)

    async def set_close_on_eof(self, enabled: bool) -> None:
        await self._call("close_on_eof", {"enabled": enabled})

    async def ns_op(self, op: str, args: Mapping[str, object]) -> object:
        """Holds, sysctls and counters in the agent's namespace (``NamespaceOps`` there)."""
        result = await self._call("ns_op", {"op": op, "args": dict(args)})
        return result.get("value")


def _str(result: Mapping[str, Any], key: str, peer: str) -> str:
    value = result.get(key)
    if not isinstance(value, str):
        raise NetworkError(f"agent {peer}: malformed reply (no {key})")
    return value


def _int(result: Mapping[str, Any], key: str, peer: str) -> int:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NetworkError(f"agent {peer}: malformed reply (no {key})")
    return value


def probe_agent(
    host: str,
    port: int,
    token: str,
    timeout: float = CONNECT_TIMEOUT,
    scope: Scope = contextlib.nullcontext,
) -> tuple[dict[str, Any], str]:
    """Check, before a run, that the agent answers and accepts the token (blocking).

    Returns the agent's ``hello`` reply and the local address this machine uses to reach it.
    Raises ``NetworkError`` with one line saying what is wrong.
    """
    peer = f"{host}:{port}"
    try:
        with scope():
            sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise NetworkError(f"agent {peer}: no answer within {timeout:g} s") from exc
    except OSError as exc:
        raise NetworkError(
            f"cannot reach agent {peer}: {_reason(exc)} (is 'handshake-lab agent' running there?)"
        ) from exc
    with sock, sock.makefile("rb") as stream:
        try:
            greeting = decode_greeting(stream.readline(MAX_REPLY))
            sock.sendall(encode_request(1, "hello", {"proof": proof(token, greeting.nonce)}))
            reply = decode_reply(stream.readline(MAX_REPLY))
            local = str(sock.getsockname()[0])
            if reply.ok:
                sock.sendall(encode_request(2, "bye", {}))
        except ProtocolError as exc:
            raise NetworkError(
                f"agent {peer}: not a handshake-lab agent, or it closed the connection "
                f"({exc.message})"
            ) from exc
        except OSError as exc:
            raise NetworkError(f"agent {peer}: {exc.strerror or exc}") from exc
    if not reply.ok:
        hint = " (check the token: file or HSLAB_AGENT_TOKEN)" if reply.code == "auth" else ""
        raise NetworkError(f"agent {peer} refused hello: {reply.message}{hint}")
    return dict(reply.result), local


__all__ = ["DEFAULT_AGENT_PORT", "RemoteServer", "parse_peer", "probe_agent"]
