"""Echo servers and clients on real sockets: the only place the lab opens sockets.

Every operation returns an *outcome* string instead of raising for the socket errors a lab may
want to show: ``"ok"``, ``"pending"`` (a connect still in SYN_SENT), ``"data"``, ``"EOF"``, or
an errno name such as ``"ECONNREFUSED"``, ``"ECONNRESET"``, ``"EADDRINUSE"``. The lab runner
compares outcomes with what the lab expects, exactly as it compares kernel states.

Choices that matter for what the kernel shows:

* Listeners set SO_REUSEADDR explicitly (on or off). asyncio's and uvloop's ``start_server``
  turn it on by default on Unix, which would hide the TIME_WAIT/EADDRINUSE lesson; we create the
  listening socket ourselves and hand it over with ``sock=``. ``reuse_address="default"`` lets
  the loop decide, so a lab can show what that default is.
* A listener can be created without accepting (``accept=False``): with ``listen(0)`` and one
  queued connection the accept queue is full and further SYNs are dropped, which holds a client
  in SYN_SENT without privileges.
* Half-close is ``write_eof()`` (shutdown(SHUT_WR)); abortive close sets SO_LINGER {on, 0}
  and aborts the transport, so the kernel sends RST and skips TIME_WAIT.
* Both ends read in the background into a buffer, so the socket's receive queue stays empty
  and an ordinary close() sends FIN, not RST. The server echoes what it reads unless told not to.
  ``stop_reading`` pauses that reader (what arrives then stays in the kernel's receive queue, as
  in a program that never reads); ``read_all`` reads again, everything, until EOF or an error.
* ``fill`` writes straight to the kernel (not through the transport's buffer) until the write
  would block, so what is unsent sits in the kernel's send queue where SO_LINGER acts on it.
* Listeners the lab opens itself keep each connection's SYN (TCP_SAVE_SYN); the server reads
  it at accept (``Stream.saved_syn``), so a lab can later send a late copy of it (the
  TIME_WAIT lab's old duplicate). Nothing on the wire changes.
* A client that will later connect again from the same port (``reconnect``) takes its first
  port outside ``ip_local_port_range`` (``bind_quiet_port``). The kernel hands out ports only
  from that range, so while the client is closed no other program's connect() can take the
  port; with an ephemeral port, on a busy loopback, one often does and the reconnect fails
  with EADDRINUSE.
* A close with SO_LINGER {on, N > 0} blocks in the kernel for up to N s, even on a
  non-blocking socket (Linux ignores O_NONBLOCK there). The last reference to the socket is
  therefore closed in a worker thread: the loop, and the runner's reads of the kernel, go on.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import os
import random
import socket
import struct
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from handshake_lab.net.waits import cancel_and_wait, wait_for
from handshake_lab.observe.base import MAPPED_PREFIX, Address, family_of
from handshake_lab.observe.tcpinfo import TCPI_MIN_SIZE, TCPI_RTT, TCPI_RTT_AT

READ_CHUNK = 65536
FILL_CHUNK = 65536
FILL_LIMIT = 64 * 1024 * 1024
"""``fill`` stops here even if the kernel still takes data (its buffers are far smaller)."""
FILL_QUIET_MIN = 0.2
FILL_QUIET_RTTS = 3
"""``fill`` calls the peer's window shut when this long (seconds; or this many smoothed RTTs,
the longer) freed no room in the send buffer."""
SIOCOUTQ = termios.TIOCOUTQ  # the socket's unacknowledged bytes (linux/sockios.h)
SIOCINQ = termios.FIONREAD  # the socket's unread bytes
TCP_SAVE_SYN = 27  # linux/tcp.h: a listener keeps each connection's SYN (IP and TCP headers)
TCP_SAVED_SYN = 28  # ... which getsockopt on the accepted socket returns, once
SAVED_SYN_MAX = 512
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
QUIET_PORT_TRIES = 64


def errno_name(exc: BaseException) -> str:
    """The errno name of an OSError (``"ECONNRESET"``), or the exception's class name."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return type(exc).__name__


def address_of(sockaddr: object) -> Address:
    """Turn a socket address tuple into an ``Address``."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        raise ValueError(f"not an inet socket address: {sockaddr!r}")
    host = str(sockaddr[0])
    if host.startswith(MAPPED_PREFIX):
        # An IPv6 socket's IPv4 peer: the same 4-tuple as the IPv4 end's (observe.base).
        return Address(host.removeprefix(MAPPED_PREFIX), int(sockaddr[1]), mapped=True)
    return Address(host, int(sockaddr[1]))


def ephemeral_range() -> tuple[int, int]:
    """The namespace's ``ip_local_port_range`` (low, high), both included."""
    with open(PORT_RANGE, encoding="ascii") as f:
        low, high = f.read().split()
    return int(low), int(high)


def bind_quiet_port(sock: socket.socket) -> None:
    """Bind ``sock`` to a free port outside the ephemeral range, one the kernel never picks
    for anyone's connect() or bind(0). The address stays the wildcard: connect() picks the
    source address by the route, as for any client. Raises the last OSError if no port tried
    was free (or the range leaves none outside it)."""
    low, high = ephemeral_range()
    candidates = [*range(1024, low), *range(high + 1, 65536)]
    if not candidates:
        raise OSError(errno.EADDRNOTAVAIL, "no port outside ip_local_port_range")
    last: OSError | None = None
    for port in random.sample(candidates, min(QUIET_PORT_TRIES, len(candidates))):
        try:
            sock.bind(("", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
        else:
            return
    assert last is not None
    raise last


def adjacent_dups(fds: Sequence[int]) -> int:
    """Duplicate ``fds`` onto consecutive descriptors (close-on-exec); return the first. The
    lowest free run is taken, as F_DUPFD does, so other threads opening files meanwhile are
    no danger: a taken number only moves the search on."""
    base = 3
    while True:
        made: list[int] = []
        try:
            for i, fd in enumerate(fds):
                got = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base + i)
                made.append(got)
                if got != base + i:
                    break
            else:
                return base
        except OSError:
            for fd in made:
                os.close(fd)
            raise
        for fd in made:
            os.close(fd)
        base += len(made)  # descriptor base + len(made) - 1 is taken: start after it


async def close_at_once(streams: Sequence[Stream], timeout: float) -> None:
    """Close ``streams`` so that their FINs leave in one system call, microseconds apart.

    Two close() calls from Python, even back to back, can be milliseconds apart: another
    thread (a capture, an observer) may take the GIL in between, and the two FINs then arm
    their retransmission timers in different ticks (measured under load: 6.6 ms, then every
    resend 8 and 32 ms apart, and the FINs of the simultaneous-close lab did not cross). So
    each socket is first duplicated onto consecutive descriptors, the streams are closed as
    usual (no FIN yet: the duplicates keep the sockets open), and then one closerange() drops
    the last references to both: the kernel closes them, and sends both FINs, on its way back
    from that one call."""
    fds = []
    for stream in streams:
        sock = stream.sock
        if sock is None:
            raise OSError(errno.ENOTCONN, "a stream to close has no socket")
        fds.append(sock.fileno())
    first = adjacent_dups(fds)
    try:
        for stream in streams:
            stream.begin_close()
        await asyncio.gather(*(stream.close(timeout) for stream in streams))
    finally:
        os.closerange(first, first + len(fds))


@dataclass
class Stream:
    """One end of an established connection, read continuously in the background."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    echo: bool = False
    received: bytearray = field(default_factory=bytearray)
    consumed: int = 0
    eof: bool = False
    eof_reported: bool = False
    error: str | None = None
    closed: bool = False
    linger: int | None = None  # SO_LINGER seconds set by ``set_linger`` (None: off)
    reading: bool = True
    on_eof: Callable[[Stream], None] | None = None
    saved_syn: bytes | None = None  # the SYN that opened it, as the listener saved it
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    self.eof = True
                    if self.on_eof is not None:
                        self.on_eof(self)
                    return
                self.received += chunk
                if self.echo and not self.closed and not self.writer.is_closing():
                    # The echo has read these bytes: a later recv shows only what is new.
                    self.writer.write(chunk)
                    self.consumed = len(self.received)
                self._changed.set()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = errno_name(exc)
        finally:
            self._changed.set()

    @property
    def sock(self) -> socket.socket | None:
        raw = self.writer.get_extra_info("socket")
        if raw is None:
            return None
        # asyncio hands out a TransportSocket wrapper; uvloop a socket-like object. Both expose
        # fileno() and setsockopt(), which is all we need.
        return raw  # type: ignore[no-any-return]

    async def send(self, data: bytes) -> str:
        if self.closed or self.writer.is_closing():
            return "EPIPE"
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as exc:
            return errno_name(exc)
        return "ok"

    def send_eof(self) -> str:
        if self.closed or self.writer.is_closing():
            return "EPIPE"
        try:
            self.writer.write_eof()
        except OSError as exc:
            return errno_name(exc)
        return "ok"

    async def wait_input(self, timeout: float) -> tuple[str, bytes]:
        """Wait for unread data, EOF or an error. Returns (outcome, data)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if len(self.received) > self.consumed:
                data = bytes(self.received[self.consumed :])
                self.consumed = len(self.received)
                return "data", data
            if self.error is not None:
                return self.error, b""
            if self.eof:
                self.eof_reported = True
                return "EOF", b""
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "ETIMEDOUT", b""
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._changed.wait(), remaining)

    def _transport(self) -> asyncio.Transport:
        # A stream's transport reads and writes (asyncio's and uvloop's); the writer's
        # attribute is only typed as the writing half.
        return cast(asyncio.Transport, self.writer.transport)

    def stop_reading(self) -> str:
        """Read nothing more: the kernel keeps what arrives in the socket's receive queue."""
        if self.closed or self.writer.is_closing():
            return "EPIPE"
        self._transport().pause_reading()
        self.reading = False
        return "ok"

    async def read_all(self, timeout: float) -> tuple[str, int]:
        """Read again, everything, until EOF or an error. Returns (outcome, bytes read)."""
        start = self.consumed
        if not self.reading and not self.writer.transport.is_closing():
            self._transport().resume_reading()
        self.reading = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.error is None and not self.eof:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._changed.wait(), remaining)
        read = len(self.received) - start
        # Counted, not kept for a later recv: megabytes are no text to show.
        self.consumed = len(self.received)
        if self.error is not None:
            return self.error, read
        if self.eof:
            self.eof_reported = True
            return "EOF", read
        return "ETIMEDOUT", read

    def _fd(self) -> int | None:
        sock = self.sock
        if sock is None or self.closed:
            return None
        fd = sock.fileno()
        return fd if fd >= 0 else None

    async def fill(self, timeout: float) -> tuple[str, dict[str, int]]:
        """Write until the kernel accepts no more and nothing drains any more: the peer's window
        is shut and the rest waits in the send queue. Facts: bytes ``sent``, ``send_q`` after.

        One write-until-EAGAIN is not enough on a slow wire (two VMs, netem): the send buffer
        fills faster than the link empties it, and a peer whose window is still open takes the
        rest a moment later (a lingering close then has nothing to wait for). So after each
        EAGAIN it waits a quiet time (``FILL_QUIET_RTTS`` x the kernel's srtt, at least
        ``FILL_QUIET_MIN``) and writes again, until a whole quiet time freed no room at all, or
        ``timeout`` passed."""
        fd = self._fd()
        if fd is None or self.writer.is_closing():
            return "EPIPE", {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = 0
        first = True
        while sent < FILL_LIMIT:
            try:
                wrote = _write_until_full(fd, FILL_LIMIT - sent)
            except OSError as exc:
                return errno_name(exc), {"sent": sent}
            sent += wrote
            if (wrote == 0 and not first) or loop.time() >= deadline:
                break
            first = False
            await asyncio.sleep(min(_quiet_time(fd), max(0.0, deadline - loop.time())))
        try:
            return "ok", {"sent": sent, "send_q": _ioctl_int(fd, SIOCOUTQ)}
        except OSError as exc:
            return errno_name(exc), {"sent": sent}

    def set_linger(self, seconds: int) -> str:
        """SO_LINGER {on, seconds}: a later close() waits up to ``seconds`` for unsent data
        (0: the close is an abort, RST)."""
        sock = self.sock
        if sock is None or self.closed:
            return "EPIPE"
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, seconds))
        except ValueError:  # uvloop: the transport is closed already (fd -1)
            return "EPIPE"
        except OSError as exc:
            return errno_name(exc)
        self.linger = seconds
        return "ok"

    def set_keepalive(self, idle: int, interval: int, count: int) -> str:
        """SO_KEEPALIVE on: after ``idle`` s of silence a probe, then one every ``interval`` s;
        ``count`` unanswered probes and the kernel ends the connection (ETIMEDOUT)."""
        return self._setsockopts(
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count),
        )

    def set_user_timeout(self, ms: int) -> str:
        """TCP_USER_TIMEOUT: sent data unacknowledged for ``ms`` ends the connection."""
        return self._setsockopts((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ms))

    def _setsockopts(self, *options: tuple[int, int, int]) -> str:
        sock = self.sock
        if sock is None or self.closed:
            return "EPIPE"
        try:
            for level, name, value in options:
                sock.setsockopt(level, name, value)
        except ValueError:  # uvloop: the transport is closed already (fd -1)
            return "EPIPE"
        except OSError as exc:
            return errno_name(exc)
        return "ok"

    def queues(self) -> tuple[str, dict[str, int]]:
        """The socket's queues as ``ss`` calls them: ``recv_q`` unread, ``send_q`` unacked."""
        fd = self._fd()
        if fd is None:
            return "EPIPE", {}
        try:
            return "ok", {"recv_q": _ioctl_int(fd, SIOCINQ), "send_q": _ioctl_int(fd, SIOCOUTQ)}
        except OSError as exc:
            return errno_name(exc), {}

    async def close_lingering(self) -> tuple[str, dict[str, int]]:
        """close() with SO_LINGER {on, N > 0}: returns when the kernel's close returned, with
        fact ``close_ms``, how long it blocked (up to N s while unsent data is queued)."""
        fd = self._fd()
        if fd is None:
            return await self.close(), {}
        # Our own reference: the transport's close below is then not the last one, so it
        # cannot block the loop; the kernel's lingering close happens when the thread closes
        # this one.
        own = os.dup(fd)
        self.closed = True
        self.writer.close()
        await self.settle_close()
        await self._stop_reader()
        started = time.monotonic()
        try:
            await asyncio.to_thread(os.close, own)
        except OSError as exc:
            return errno_name(exc), {"close_ms": round((time.monotonic() - started) * 1000)}
        return "ok", {"close_ms": round((time.monotonic() - started) * 1000)}

    def begin_close(self) -> None:
        """Start closing now (the transport closes the socket on the loop's next turn), so
        that two ends begun one after the other are closed in the same turn."""
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def close(self, timeout: float = 2.0) -> str:
        self.begin_close()
        with contextlib.suppress(OSError, TimeoutError):
            await wait_for(self.writer.wait_closed(), timeout)
        await self._stop_reader()
        return "ok"

    async def abort(self) -> str:
        """Close with SO_LINGER {on, 0}: the kernel sends RST and no TIME_WAIT is kept."""
        if self.closed:
            return "ok"
        self.closed = True
        sock = self.sock
        if sock is not None:
            # ValueError: uvloop's socket of a transport the peer's RST already closed has
            # fd -1 (seen after a read that ended in ECONNRESET); nothing is left to reset.
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        await self.settle_close()
        await self._stop_reader()
        return "ok"

    async def settle_close(self, timeout: float = 1.0) -> None:
        """Wait for the transport's end and take whatever error it ended with.

        asyncio's stream protocol stores the connection's last error (ECONNRESET when the peer
        reset it) in a future that only its ``__del__`` marks as seen; when a garbage-collection
        cycle frees the future first, asyncio prints "Future exception was never retrieved" with
        a traceback (seen 1 time in ~100 Ctrl-C's during a soak). Awaiting ``wait_closed`` here
        retrieves it.
        """
        with contextlib.suppress(Exception):
            await wait_for(self.writer.wait_closed(), timeout)

    async def _stop_reader(self) -> None:
        if self._task is not None and not self._task.done():
            await cancel_and_wait(self._task)


def _write_until_full(fd: int, limit: int) -> int:
    """Write ``FILL_CHUNK`` blocks to non-blocking ``fd`` until EAGAIN (or ``limit``)."""
    chunk = b"x" * FILL_CHUNK
    wrote = 0
    try:
        while wrote < limit:
            wrote += os.write(fd, chunk)
    except BlockingIOError:
        pass
    return wrote


def _quiet_time(fd: int) -> float:
    """How long ``fill`` waits for room before it calls the peer's window shut: a few of the
    kernel's smoothed RTTs (``tcpi_rtt``), so a late ACK on a slow wire is not taken for none."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return FILL_QUIET_MIN
    with sock:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_MIN_SIZE)
        except OSError:
            return FILL_QUIET_MIN
    if len(info) < TCPI_MIN_SIZE:
        return FILL_QUIET_MIN
    srtt_us, _rttvar = cast(tuple[int, int], TCPI_RTT.unpack_from(info, TCPI_RTT_AT))
    return max(FILL_QUIET_MIN, FILL_QUIET_RTTS * srtt_us / 1e6)


def _ioctl_int(fd: int, request: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, request, buf)
    return int(buf[0])


@dataclass
class Listener:
    """A listening socket, served by the loop once ``accept`` has been called."""

    sock: socket.socket
    address: Address
    server: asyncio.Server | None = None
    backlog: int = 16

    @property
    def reuse_address(self) -> int:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)

    def facts(self) -> dict[str, int]:
        """What ``listen`` reports: SO_REUSEADDR in effect, and IPV6_V6ONLY for an IPv6 one."""
        facts = {"so_reuseaddr": self.reuse_address}
        if self.sock.family == socket.AF_INET6:
            facts["v6only"] = self.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return facts


class EchoServer:
    """The server side of a lab: listeners by port slot, accepted connections by peer."""

    def __init__(self, host: str, *, echo: bool = True) -> None:
        self.host = host
        self.echo = echo
        # While set, a connection that reads EOF is closed at once (churn: many short
        # connections whose client closes first and must end in TIME_WAIT on its side).
        self.close_on_eof = False
        self._closers: set[asyncio.Future[None]] = set()
        self.listeners: dict[str, Listener] = {}
        self.connections: dict[Address, Stream] = {}
        self._accepted = asyncio.Condition()

    async def listen(
        self,
        slot: str,
        port: int,
        *,
        backlog: int,
        reuse_address: bool | None,
        accept: bool,
        host: str | None = None,
        v6only: bool | None = None,
    ) -> tuple[str, dict[str, int]]:
        """Open a listener on ``port`` at ``host`` (default: the server's address; ``::`` or
        ``0.0.0.0`` for a wildcard). ``reuse_address=None`` means the loop's default;
        ``v6only=None`` leaves IPV6_V6ONLY to the kernel's default (net.ipv6.bindv6only)."""
        if slot in self.listeners:
            return "EALREADY", {}
        bind_host = host or self.host
        if reuse_address is None:
            # Let asyncio/uvloop choose, to show what they choose.
            try:
                server = await asyncio.start_server(
                    self._on_connection, bind_host, port, backlog=backlog
                )
            except OSError as exc:
                return errno_name(exc), {}
            sock = server.sockets[0]
            listener = Listener(
                sock=sock,
                address=address_of(sock.getsockname()),
                server=server,
                backlog=backlog,
            )
            self.listeners[slot] = listener
            return "ok", listener.facts()
        sock = socket.socket(family_of(bind_host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
            if v6only is not None:
                # Before bind(): the option decides which ports bind() must find free (the
                # IPv4 one too when off), and Linux refuses to change it on a bound socket.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
            sock.setsockopt(socket.IPPROTO_TCP, TCP_SAVE_SYN, 1)
            sock.bind((bind_host, port))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            return errno_name(exc), {}
        sock.setblocking(False)
        listener = Listener(sock=sock, address=address_of(sock.getsockname()), backlog=backlog)
        self.listeners[slot] = listener
        if accept:
            await self._serve(listener)
        return "ok", listener.facts()

    async def accept(self, slot: str) -> str:
        listener = self.listeners.get(slot)
        if listener is None:
            return "ENOTCONN"
        if listener.server is None:
            await self._serve(listener)
        return "ok"

    async def _serve(self, listener: Listener) -> None:
        listener.server = await asyncio.start_server(
            self._on_connection, sock=listener.sock, backlog=max(listener.backlog, 1)
        )

    async def unlisten(self, slot: str) -> str:
        listener = self.listeners.pop(slot, None)
        if listener is None:
            return "ENOTCONN"
        if listener.server is not None:
            # The server owns the socket once serving (asyncio hands out a wrapper with no
            # close()); closing the server closes the listening socket.
            listener.server.close()
        else:
            listener.sock.close()
        return "ok"

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = address_of(writer.get_extra_info("peername"))
        stream = Stream(reader, writer, echo=self.echo, on_eof=self._eof)
        raw = writer.get_extra_info("socket")
        if raw is not None:
            # OSError: a listener the loop made (reuse_address="default") saved no SYN.
            with contextlib.suppress(OSError):
                stream.saved_syn = (
                    raw.getsockopt(socket.IPPROTO_TCP, TCP_SAVED_SYN, SAVED_SYN_MAX) or None
                )
        self.connections[peer] = stream
        stream.start()
        async with self._accepted:
            self._accepted.notify_all()

    def _eof(self, stream: Stream) -> None:
        if self.close_on_eof:
            stream.closed = True
            stream.writer.close()
            closer = asyncio.ensure_future(stream.settle_close())
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)

    async def connection(self, peer: Address, timeout: float) -> Stream | None:
        """The accepted connection from ``peer``, waiting up to ``timeout`` for the accept."""
        async with self._accepted:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._accepted.wait_for(lambda: peer in self.connections), timeout)
        return self.connections.get(peer)

    async def close_all(self) -> None:
        """Release every socket: connections by RST (no TIME_WAIT left), then listeners."""
        for stream in list(self.connections.values()):
            await stream.abort()
        for slot in list(self.listeners):
            await self.unlisten(slot)


class Client:
    """A client socket. ``connect`` may return while the kernel is still in SYN_SENT."""

    def __init__(self, name: str, host: str, *, echo: bool = False) -> None:
        self.name = name
        self.host = host
        self.echo = echo
        self.sock: socket.socket | None = None
        self.local: Address | None = None
        self.remote: Address | None = None
        self.stream: Stream | None = None
        self.outcome: str | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def connect(
        self,
        port: int,
        *,
        wait: bool,
        timeout: float,
        bind: tuple[str, int] | None = None,
        quiet_port: bool = False,
    ) -> str:
        """Connect to ``port`` on our host: from ``bind`` if given, else from a port outside
        the ephemeral range if ``quiet_port`` (``bind_quiet_port``), else from the port the
        kernel picks in connect()."""
        if self.sock is not None:
            return "EISCONN"
        loop = asyncio.get_running_loop()
        sock = socket.socket(family_of(self.host), socket.SOCK_STREAM)
        sock.setblocking(False)
        if bind is not None or quiet_port:
            try:
                if bind is not None:
                    sock.bind(bind)
                else:
                    bind_quiet_port(sock)
            except OSError as exc:
                sock.close()
                return errno_name(exc)
        self.sock = sock
        self.remote = Address(self.host, port)
        self._connecting = asyncio.ensure_future(self._connect(loop, sock, port))
        # Let the task issue connect(): after it the kernel has chosen our local port.
        for _ in range(100):
            if self._connecting.done():
                break
            with contextlib.suppress(OSError):
                name = address_of(sock.getsockname())
                if name.port != 0:
                    self.local = name
                    break
            await asyncio.sleep(0)
        if wait or self._connecting.done():
            return await self.wait_connected(timeout)
        return "pending"

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, port: int
    ) -> None:
        try:
            await loop.sock_connect(sock, (self.host, port))
            self.local = address_of(sock.getsockname())
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError as exc:
            self.outcome = errno_name(exc)
            sock.close()
            return
        self.stream = Stream(reader, writer, echo=self.echo)
        self.stream.start()
        self.outcome = "ok"

    def refresh_local(self) -> None:
        """Learn our local address from the socket if we do not know it yet.

        The kernel picks the local port inside connect(); depending on the loop and the load,
        that happens after ``connect`` returned "pending". Reading it when needed means a
        client in SYN_SENT is never mistaken for a client with no socket.
        """
        if self.local is not None or self.sock is None or self.sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            name = address_of(self.sock.getsockname())
            if name.port != 0:
                self.local = name

    async def wait_connected(self, timeout: float) -> str:
        """Wait for a pending connect; ``"pending"`` if it is still in progress."""
        if self._connecting is None:
            return "ENOTCONN"
        if not self._connecting.done():
            with contextlib.suppress(TimeoutError):
                await wait_for(asyncio.shield(self._connecting), timeout)
        if not self._connecting.done():
            return "pending"
        return self.outcome or "ok"

    async def close_all(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            await cancel_and_wait(self._connecting)
        if self.stream is not None:
            await self.stream.abort()
        elif self.sock is not None:
            self.sock.close()
