"""The agent: the server side of labs, driven over the control protocol (``agent.protocol``).

One asyncio server listens on the control address. Each connection is a *session*:

1. the agent sends a greeting with a fresh nonce;
2. the client must send ``hello`` with the HMAC proof of the shared token within
   ``hello_timeout``, or the session ends (``auth``/``timeout``);
3. then ``begin`` opens a lab session: a ``LocalServer`` this session alone owns, whose sockets
   live in the agent's own network namespace and whose states are read there (ss, psutil);
4. lab verbs drive that ``LocalServer``; ``close_all`` or the end of the connection releases
   every socket and nft hold the session made.

Whatever ends a connection (``bye``, EOF, a client that vanished, a protocol violation, a
timeout, the agent shutting down) runs the same bounded cleanup, so a vanished client leaves no
sockets behind and the agent goes on serving others. One session's failure never touches
another's state: nothing is shared between sessions but the (stateless) observers.

Limits: a request line is ``MAX_LINE`` bytes at most; a line that has started must be complete
within ``line_timeout`` (a slow writer cannot hold a session open byte by byte); an
authenticated client silent for ``idle_timeout`` is dropped (the runner pings while idle);
at most ``max_connections`` connections at once.

Before authentication a connection is a cost anyone who reaches the port can impose, so it is
bounded more tightly (issue 18: 32 idle or trickling connections used to lock everyone out):
``hello_timeout`` is the whole time from accept to a valid ``hello``, however the bytes
trickle in; at most ``max_preauth`` unauthenticated connections at once, and at most
``max_preauth_per_address`` from one address, so one address can never take the slots an
authenticated client needs; and each wrong token from an address waits longer before its
reply (``AuthThrottle``), which, with the per-address quota, bounds how fast one address can
guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from handshake_lab import __version__
from handshake_lab.agent.protocol import (
    MAX_LINE,
    MAX_REPLY,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    ErrorCode,
    ProtocolError,
    Request,
    decode_request,
    encode_error,
    encode_greeting,
    encode_ok,
    proof_matches,
    snapshot_to_doc,
    validate_args,
)
from handshake_lab.errors import HandshakeLabError, MissingDependencyError
from handshake_lab.net.sides import LocalServer
from handshake_lab.net.waits import wait_for
from handshake_lab.observe.base import Observer
from handshake_lab.topo.registry import is_owned_name
from handshake_lab.topo.vmhold import vm_holds_allowed, vm_ops_here

log = logging.getLogger("handshake_lab.agent")

CLEANUP_TIMEOUT = 5.0
READ_CHUNK = 65536


@dataclass
class AgentConfig:
    """How the agent listens and what it tolerates. ``host`` is also the lab address."""

    host: str
    port: int
    token: str
    netns: str | None = None
    hello_timeout: float = 5.0
    line_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 32
    max_preauth: int = 16
    """Unauthenticated connections at once, all addresses; half of ``max_connections``, so
    authenticated sessions always have the other half."""
    max_preauth_per_address: int = 4
    auth_delay: float = 0.05
    """Wait before answering an address's first wrong token; doubles with each further one."""
    auth_delay_max: float = 2.0
    auth_forget: float = 60.0
    """An address with no wrong token for this long starts again at ``auth_delay``."""


class AuthThrottle:
    """Per-address backoff for wrong tokens: pure bookkeeping, the clock is injected.

    ``failed(address)`` records a wrong token and returns how long to wait before answering
    it: ``base`` for the first, doubling per failure, at most ``cap``. A good token
    (``succeeded``) or ``forget`` seconds without failures resets the address. At most
    ``max_addresses`` are remembered (the stalest are dropped first), so a flood of source
    addresses cannot grow the table without bound.
    """

    def __init__(
        self,
        base: float,
        cap: float,
        forget: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 4096,
    ) -> None:
        self.base = base
        self.cap = cap
        self.forget = forget
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: dict[str, tuple[int, float]] = {}

    def failures(self, address: str) -> int:
        count, last = self._failures.get(address, (0, 0.0))
        return count if count and self.clock() - last < self.forget else 0

    def failed(self, address: str) -> float:
        count = self.failures(address) + 1
        self._failures.pop(address, None)  # re-inserted last: the dict stays oldest-first
        self._failures[address] = (count, self.clock())
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]
        return float(min(self.cap, self.base * 2 ** (count - 1)))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


@dataclass
class AgentStats:
    """Counters for logs and tests: sessions seen, and how they ended."""

    sessions: int = 0
    active: int = 0
    authenticated: int = 0
    ended: Counter[str] = field(default_factory=Counter)


class SessionEnd(Exception):
    """Raised inside a session to end it after the reply has been sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LineReader:
    """Newline-framed reads with a size limit, an idle timeout and a per-line deadline."""

    def __init__(self, reader: asyncio.StreamReader, max_line: int) -> None:
        self.reader = reader
        self.max_line = max_line
        self.buffer = bytearray()

    async def read_line(self, idle_timeout: float, line_timeout: float) -> bytes | None:
        """One line without its newline; None on a clean EOF between lines.

        ``idle_timeout`` bounds the wait for a line to start, ``line_timeout`` the time from its
        first byte to its newline. Raises ``ProtocolError`` (``too_large``, ``timeout``,
        ``malformed`` for an EOF in mid-line).
        """
        loop = asyncio.get_running_loop()
        line_deadline: float | None = None
        idle_deadline = loop.time() + idle_timeout
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                if end + 1 > self.max_line:
                    raise ProtocolError(
                        ErrorCode.TOO_LARGE, f"request longer than {self.max_line} bytes"
                    )
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) >= self.max_line:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"request longer than {self.max_line} bytes"
                )
            if self.buffer and line_deadline is None:
                line_deadline = loop.time() + line_timeout
            deadline = idle_deadline if line_deadline is None else line_deadline
            remaining = deadline - loop.time()
            if remaining <= 0:
                if line_deadline is None:
                    raise ProtocolError(ErrorCode.TIMEOUT, f"no request within {idle_timeout:g} s")
                raise ProtocolError(
                    ErrorCode.TIMEOUT, f"request line not complete within {line_timeout:g} s"
                )
            try:
                chunk = await wait_for(self.reader.read(READ_CHUNK), remaining)
            except TimeoutError:
                continue  # the deadline check above turns this into the right error
            if not chunk:
                if self.buffer:
                    raise ProtocolError(ErrorCode.MALFORMED, "connection ended in mid-line")
                return None
            self.buffer += chunk


Handler = Callable[["Session", dict[str, Any]], Coroutine[Any, Any, dict[str, object]]]


class Session:
    """One control connection: authentication, then at most one lab session at a time."""

    _ids = itertools.count(1)

    def __init__(
        self,
        agent: Agent,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.agent = agent
        self.config = agent.config
        self.id = next(self._ids)
        self.lines = LineReader(reader, MAX_LINE)
        self.writer = writer
        self.peer = _peer_name(writer)
        self.address = _peer_address(writer)
        self.nonce = secrets.token_hex(NONCE_BYTES)
        self.authenticated = False
        self.last_seq = 0
        self.server: LocalServer | None = None

    # -- the connection ---------------------------------------------------------------------

    async def run(self) -> str:
        """Serve the connection until it ends; returns why it ended (for logs and stats)."""
        try:
            await self._send(encode_greeting(self.nonce))
            return await self._serve()
        except SessionEnd as end:
            return end.reason
        except (ConnectionError, OSError) as exc:
            return f"connection lost ({type(exc).__name__})"
        finally:
            self.agent.preauth_done(self)  # before the close: the slot is free once they see EOF
            await self._release()
            self.writer.close()
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                await wait_for(self.writer.wait_closed(), 1.0)

    async def _serve(self) -> str:
        started = time.monotonic()
        while True:
            line_timeout = self.config.line_timeout
            if self.authenticated:
                idle = self.config.idle_timeout
            else:
                # One deadline for the whole hello: a line that has started gets no more time
                # than is left of it, so a trickling client is cut off at hello_timeout too.
                idle = max(0.0, self.config.hello_timeout - (time.monotonic() - started))
                line_timeout = min(line_timeout, idle)
            try:
                line = await self.lines.read_line(idle, line_timeout)
            except ProtocolError as exc:
                if exc.code == ErrorCode.TIMEOUT and not self.authenticated:
                    exc = ProtocolError(
                        ErrorCode.TIMEOUT, f"no hello within {self.config.hello_timeout:g} s"
                    )
                await self._fail(exc)
            if line is None:
                return "client closed the connection"
            try:
                request = decode_request(line)
                reply = await self._handle(request)
            except ProtocolError as exc:
                if exc.fatal:
                    await self._fail(exc)
                await self._send(encode_error(exc.seq, exc.code, exc.message))
                continue
            await self._send(reply)
            if request.verb == "bye":
                return "bye"

    async def _fail(self, exc: ProtocolError) -> NoReturn:
        """Send a fatal error and end the session."""
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await self._send(encode_error(exc.seq, exc.code, exc.message))
        raise SessionEnd(f"{exc.code}: {exc.message}")

    async def _send(self, data: bytes) -> None:
        if len(data) > MAX_REPLY:
            data = encode_error(None, ErrorCode.FAILED, "reply too large to send")
        self.writer.write(data)
        # A client that does not read its replies cannot make the agent buffer without bound.
        try:
            await wait_for(self.writer.drain(), self.config.line_timeout)
        except TimeoutError:
            raise SessionEnd("client does not read its replies") from None

    # -- requests ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> bytes:
        seq = request.seq
        if not self.authenticated:
            if request.verb != "hello":
                raise ProtocolError(ErrorCode.AUTH, "the first request must be hello", seq)
            try:
                args = validate_args("hello", request.args)
            except ProtocolError as exc:
                raise ProtocolError(ErrorCode.AUTH, exc.message, seq) from exc
            if not proof_matches(self.config.token, self.nonce, args["proof"]):
                delay = self.agent.throttle.failed(self.address)
                log.info(
                    "session %d from %s: wrong token (reply in %g s)", self.id, self.peer, delay
                )
                await asyncio.sleep(delay)
                raise ProtocolError(ErrorCode.AUTH, "wrong token", seq)
            self.authenticated = True
            self.agent.throttle.succeeded(self.address)
            self.agent.preauth_done(self)
            self.last_seq = seq
            self.agent.stats.authenticated += 1
            log.info("session %d from %s: authenticated", self.id, self.peer)
            return encode_ok(seq, self.agent.describe())
        if seq <= self.last_seq:
            raise ProtocolError(
                ErrorCode.REPLAY,
                f"seq {seq} is not greater than {self.last_seq}: replayed or reordered",
                seq,
            )
        self.last_seq = seq
        try:
            args = validate_args(request.verb, request.args)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, exc.message, seq) from exc
        handler = HANDLERS[request.verb]
        log.debug("session %d: %s %s", self.id, request.verb, args)
        try:
            result = await handler(self, args)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, exc.message, seq) from exc
        except HandshakeLabError as exc:
            raise ProtocolError(ErrorCode.FAILED, str(exc), seq) from exc
        except (OSError, ValueError) as exc:
            log.debug("session %d: %s failed", self.id, request.verb, exc_info=True)
            raise ProtocolError(ErrorCode.FAILED, f"{request.verb} failed: {exc}", seq) from exc
        return encode_ok(seq, result)

    def lab(self) -> LocalServer:
        if self.server is None:
            raise ProtocolError(ErrorCode.NO_SESSION, "no lab session: send begin first")
        return self.server

    async def _release(self) -> None:
        """Release every socket and hold of this session; bounded, never raises."""
        server, self.server = self.server, None
        if server is None:
            return
        with contextlib.suppress(Exception):
            await wait_for(asyncio.shield(server.close_all()), CLEANUP_TIMEOUT)
        # Holds stop dropping when their session ends: the namespace outlives the session.
        for hold_id in list(server.ops.holds):
            with contextlib.suppress(Exception):
                await wait_for(server.ns_op("release_hold", {"id": hold_id}), 10.0)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    """The peer's address without its port: what the pre-auth quota and the throttle count."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "?"


# -- verb handlers ---------------------------------------------------------------------------


async def _hello(session: Session, args: dict[str, Any]) -> dict[str, object]:
    raise ProtocolError(ErrorCode.FAILED, "already authenticated")


async def _ping(session: Session, args: dict[str, Any]) -> dict[str, object]:
    return {}


async def _begin(session: Session, args: dict[str, Any]) -> dict[str, object]:
    if session.server is not None:
        raise ProtocolError(ErrorCode.FAILED, "a lab session is open: close_all first")
    agent = session.agent
    session.server = LocalServer(
        agent.config.host,
        agent.observers,
        echo=args["echo"],
        netns=agent.holds_netns(),
        fast_observers=agent.fast_observers,
        vm_ops=vm_ops_here() if agent.config.netns is None else None,  # topo.vmhold
    )
    log.info("session %d: lab %s begins", session.id, args["lab"] or "?")
    return agent.describe()


async def _reserve_port(session: Session, args: dict[str, Any]) -> dict[str, object]:
    port = await session.lab().reserve_port(args["port"], args["taken"])
    return {"port": port}


async def _listen(session: Session, args: dict[str, Any]) -> dict[str, object]:
    outcome, facts = await session.lab().listen(
        args["slot"],
        args["port"],
        backlog=args["backlog"],
        reuse_address=args["reuse_address"],
        accept=args["accept"],
    )
    return {"outcome": outcome, "facts": dict(facts)}


async def _accept(session: Session, args: dict[str, Any]) -> dict[str, object]:
    return {"outcome": await session.lab().accept(args["slot"])}


async def _unlisten(session: Session, args: dict[str, Any]) -> dict[str, object]:
    return {"outcome": await session.lab().unlisten(args["slot"])}


async def _stream_action(session: Session, args: dict[str, Any]) -> dict[str, object]:
    outcome, data, facts = await session.lab().stream_action(
        args["peer"], args["action"], args["data"], args["timeout"], args["args"]
    )
    return {"outcome": outcome, "data": data, "facts": dict(facts)}


async def _snapshot(session: Session, args: dict[str, Any]) -> dict[str, object]:
    table = await session.lab().snapshot(args["ports"], fast=args["fast"])
    return {"sources": snapshot_to_doc(table)}


async def _observers(session: Session, args: dict[str, Any]) -> dict[str, object]:
    return {"names": [o.name for o in session.agent.observers]}


async def _close_on_eof(session: Session, args: dict[str, Any]) -> dict[str, object]:
    await session.lab().set_close_on_eof(args["enabled"])
    return {}


async def _ns_op(session: Session, args: dict[str, Any]) -> dict[str, object]:
    """Holds, sysctls, counters in the agent's namespace (``net.placement.NamespaceOps``)."""
    server = session.lab()
    op, op_args = args["op"], args["args"]
    if op in {"release_hold", "dropped"} and op_args["id"] not in server.ops.holds:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"no hold {op_args['id']!r} in this session")
    if op == "add_hold" and op_args["id"] in server.ops.holds:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"hold {op_args['id']!r} exists already")
    if op == "add_hold" and op_args["hook"] is None:
        op_args["hook"] = "input"
    try:
        value = await server.ns_op(op, op_args)
    except MissingDependencyError as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from exc
    return {"value": value}


async def _close_all(session: Session, args: dict[str, Any]) -> dict[str, object]:
    await session._release()
    return {}


async def _bye(session: Session, args: dict[str, Any]) -> dict[str, object]:
    return {}


HANDLERS: Mapping[str, Handler] = {
    "hello": _hello,
    "ping": _ping,
    "begin": _begin,
    "reserve_port": _reserve_port,
    "listen": _listen,
    "accept": _accept,
    "unlisten": _unlisten,
    "stream_action": _stream_action,
    "snapshot": _snapshot,
    "observers": _observers,
    "close_on_eof": _close_on_eof,
    "ns_op": _ns_op,
    "close_all": _close_all,
    "bye": _bye,
}
"""The fixed verb table. ``protocol.VERBS`` and this table name the same verbs (tested)."""


class Agent:
    """The control server. ``await start()``, then ``await serve_forever()`` or ``close()``."""

    def __init__(
        self,
        config: AgentConfig,
        observers: Sequence[Observer],
        fast_observers: Sequence[Observer] = (),
    ) -> None:
        """``fast_observers`` (netlink) answer ``snapshot`` with ``fast``, as in a local run."""
        self.config = config
        self.observers = list(observers)
        self.fast_observers = list(fast_observers)
        self.stats = AgentStats()
        self.server: asyncio.Server | None = None
        self.sessions: set[asyncio.Task[Any]] = set()
        self.preauth: Counter[str] = Counter()
        """Unauthenticated connections per peer address."""
        self._preauth_sessions: set[int] = set()
        self.throttle = AuthThrottle(config.auth_delay, config.auth_delay_max, config.auth_forget)

    def preauth_done(self, session: Session) -> None:
        """``session`` authenticated or ended: its pre-auth slot is free. Idempotent."""
        if session.id in self._preauth_sessions:
            self._preauth_sessions.discard(session.id)
            self.preauth[session.address] -= 1
            if self.preauth[session.address] <= 0:
                del self.preauth[session.address]

    def _refusal(self, address: str) -> str | None:
        """Why a new connection from ``address`` gets ``busy``, or None to serve it."""
        if len(self.sessions) >= self.config.max_connections:
            return "too many connections"
        if sum(self.preauth.values()) >= self.config.max_preauth:
            return "too many unauthenticated connections"
        if self.preauth[address] >= self.config.max_preauth_per_address:
            return f"too many unauthenticated connections from {address}"
        return None

    @property
    def port(self) -> int:
        """The bound control port (useful with ``port=0``)."""
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def holds_netns(self) -> str | None:
        """The namespace ``ns_op`` may change (holds, sysctls): only one this tool made
        (``hslab-...``), never the host's; None otherwise."""
        ns = self.config.netns
        return ns if ns is not None and is_owned_name(ns) else None

    def describe(self) -> dict[str, object]:
        """What ``hello`` and ``begin`` answer: who we are, the lab address, the limits."""
        return {
            "agent": f"handshake-lab {__version__}",
            "protocol": PROTOCOL_VERSION,
            "host": self.config.host,
            "observers": [o.name for o in self.observers],
            "netns": self.config.netns,
            "holds": self.holds_netns() is not None,
            "vm_holds": self.config.netns is None and vm_holds_allowed(),  # topo.vmhold
            "limits": {
                "max_line": MAX_LINE,
                "max_reply": MAX_REPLY,
                "line_timeout": self.config.line_timeout,
                "idle_timeout": self.config.idle_timeout,
            },
        }

    async def start(self) -> None:
        # reuse_address explicit: a restarted agent must be able to rebind at once, and the
        # control port is not a lab socket whose TIME_WAIT lesson matters.
        self.server = await asyncio.start_server(
            self._on_connection,
            self.config.host,
            self.config.port,
            reuse_address=True,
            limit=MAX_LINE,
        )

    async def serve_forever(self) -> None:
        assert self.server is not None
        await self.server.serve_forever()

    async def close(self) -> None:
        """Stop listening, end every session (each releases its sockets), wait for them."""
        if self.server is not None:
            self.server.close()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions), timeout=CLEANUP_TIMEOUT + 1)
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await wait_for(self.server.wait_closed(), 1.0)
            self.server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.stats.sessions += 1
        refusal = self._refusal(_peer_address(writer))
        if refusal is not None:
            with contextlib.suppress(OSError, ConnectionError):
                writer.write(encode_error(None, ErrorCode.BUSY, refusal))
            writer.close()
            self.stats.ended["busy"] += 1
            return
        task = asyncio.current_task()
        assert task is not None
        session = Session(self, reader, writer)
        self.preauth[session.address] += 1
        self._preauth_sessions.add(session.id)
        self.sessions.add(task)
        self.stats.active = len(self.sessions)
        try:
            reason = await session.run()
        except asyncio.CancelledError:
            reason = "agent shutting down"  # run() released the session's sockets already
        finally:
            self.preauth_done(session)
            self.sessions.discard(task)
            self.stats.active = len(self.sessions)
        self.stats.ended[reason.split(":")[0]] += 1
        log.info("session %d from %s ended: %s", session.id, session.peer, reason)


__all__ = ["Agent", "AgentConfig", "AgentStats", "AuthThrottle", "LineReader", "Session"]
