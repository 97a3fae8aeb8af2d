"""Capture TCP segments on one interface with an AF_PACKET socket, in a background thread.

Theory of operation
-------------------
* One ``AF_PACKET``/``SOCK_RAW`` socket is bound to one interface. It is created with protocol
  0 (it receives nothing yet), bound once with protocol 0 so ``getsockname()`` reveals the
  device type (hatype), prepared (timestamps, receive buffer, BPF filter, outgoing-skip), and
  only then re-bound with ``ETH_P_ALL`` to start receiving, so no frame of another interface
  or of an unfiltered moment is queued.
* ``lo`` delivers each segment twice to a packet tap: once as it is sent (pkttype
  ``PACKET_OUTGOING``) and once as it is received (``PACKET_HOST``). On a loopback device the
  sniffer keeps only the received copy: the kernel is asked to skip outgoing frames
  (``PACKET_IGNORE_OUTGOING``, Linux >= 4.20) and the pkttype in ``recvmsg``'s address is
  checked again in user space. On a veth end the outgoing frames are the only copy of what
  that end sent, so they are kept there (``ignore_outgoing=None`` picks this automatically).
* A classic BPF filter for the wanted ports is attached with ``SO_ATTACH_FILTER`` on
  Ethernet-framed devices (veth, NICs, ``lo``) so the kernel drops other traffic before the
  copy to user space; the same test runs again in user space, so results never depend on it.
* Timestamps: ``SO_TIMESTAMPNS`` gives the kernel's receive time of each frame in nanoseconds
  on CLOCK_REALTIME. That wall time is kept as ``Packet.wall_time`` (pcap files use it) and is
  converted to the :func:`time.monotonic` clock for ``Packet.timestamp`` by adding the offset
  ``monotonic() - time()`` sampled at the moment the frame is read (two vDSO clock reads, so a
  wall-clock step during a capture does not skew later packets). The conversion is good to a
  few microseconds; a frame read with no timestamp falls back to the read time.
* The thread waits in ``select()`` on the socket and a wake-up pipe, with a timeout as a second
  guard, so :meth:`Sniffer.stop` returns promptly; on stop it first reads whatever the socket
  still holds, so segments that crossed just before ``stop()`` are not lost.
* :meth:`Sniffer.flush` wakes the thread through the same pipe and waits until it has read the
  socket empty once after the call: every frame the kernel queued before ``flush()`` is then
  in the next :meth:`Sniffer.drain`, however late a busy machine schedules the thread.

A network namespace is chosen by whoever *creates* the socket (a socket stays in the netns it
was created in), hence ``socket_factory``: ``Sniffer("veth0", socket_factory=lambda: ...)``
with a factory that enters the namespace, creates ``socket(AF_PACKET, SOCK_RAW, 0)`` and
leaves. The interface name is then resolved inside that namespace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from handshake_lab.capture.bpf import MAX_PORTS, attach_filter, tcp_ports_program
from handshake_lab.capture.decode import DecodeError, LinkType, Packet, decode_frame
from handshake_lab.errors import MissingDependencyError, NetworkError

__all__ = ["Sniffer", "SnifferStats", "default_socket_factory"]

ETH_P_ALL: Final = 0x0003
SOL_PACKET: Final = 263
PACKET_STATISTICS: Final = 6
PACKET_IGNORE_OUTGOING: Final = 23
SO_TIMESTAMPNS: Final = 35  # SO_TIMESTAMPNS_OLD: struct timespec in native longs
PACKET_OUTGOING: Final = 4

ARPHRD_ETHER: Final = 1
ARPHRD_LOOPBACK: Final = 772
ARPHRD_RAWIP: Final = 519
ARPHRD_NONE: Final = 0xFFFE
_LINK_TYPES: Final = {
    ARPHRD_ETHER: LinkType.ETHERNET,
    ARPHRD_LOOPBACK: LinkType.ETHERNET,  # lo frames carry a zeroed Ethernet header
    ARPHRD_RAWIP: LinkType.RAW,
    ARPHRD_NONE: LinkType.RAW,
}

_BUFSIZE: Final = 262144  # larger than any GSO super-packet on lo (64 KiB + headers)
_RCVBUF: Final = 4 * 1024 * 1024
_ANCBUF: Final = socket.CMSG_SPACE(16)
_BATCH: Final = 512  # frames read per wake-up before looking at the stop flag again

_NEED_RAW: Final = (
    "capturing packets needs CAP_NET_RAW: run as root, or with --topology netns (a user "
    "namespace gives it without root), or run without capture"
)


def default_socket_factory() -> socket.socket:
    """A packet socket in the caller's network namespace that receives nothing until bound."""
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)


@dataclass(frozen=True, slots=True)
class SnifferStats:
    """Counters since :meth:`Sniffer.start` (kernel counters are read when stopped)."""

    frames: int
    """Frames read from the socket."""
    kept: int
    """TCP segments on the wanted ports, handed to :meth:`Sniffer.drain`."""
    outgoing_skipped: int
    other_traffic: int
    """Frames read but not TCP on the wanted ports (the BPF filter makes this ~0)."""
    decode_errors: int
    overflow: int
    """Segments dropped because ``max_packets`` were waiting to be drained."""
    kernel_filter: bool
    """Whether the BPF port filter is attached."""
    kernel_drops: int
    """Frames the kernel dropped for lack of receive buffer (PACKET_STATISTICS)."""


class Sniffer:
    """Capture TCP segments to or from ``ports`` on ``interface`` until stopped.

    ``ports=None`` keeps every TCP segment. ``ignore_outgoing=None`` skips PACKET_OUTGOING
    copies on loopback devices only (see the module docstring). ``drain()`` returns the
    segments captured since the previous ``drain()``, oldest first.
    """

    def __init__(
        self,
        interface: str = "lo",
        ports: Iterable[int] | None = None,
        *,
        socket_factory: Callable[[], socket.socket] | None = None,
        ignore_outgoing: bool | None = None,
        kernel_filter: bool = True,
        poll_interval: float = 0.2,
        max_packets: int = 100_000,
    ) -> None:
        self.interface = interface
        self._ports: frozenset[int] | None = None if ports is None else frozenset(ports)
        self._factory = socket_factory or default_socket_factory
        self._ignore_outgoing_opt = ignore_outgoing
        self._want_kernel_filter = kernel_filter
        self._poll_interval = poll_interval
        self._max_packets = max_packets

        self._sock: socket.socket | None = None
        self._buf = memoryview(bytearray(_BUFSIZE))
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._pending: list[Packet] = []
        self._error: BaseException | None = None
        self._flush_asked = 0  # flush() calls so far (under _cond)
        self._flush_done = 0  # the last of them the thread has answered (under _cond)

        self.link_type = LinkType.ETHERNET
        self.ignore_outgoing = False
        self._kernel_filter = False
        self._frames = 0
        self._kept = 0
        self._outgoing = 0
        self._other = 0
        self._decode_errors = 0
        self._overflow = 0
        self._kernel_drops = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open and bind the socket and start the capture thread.

        Raises :class:`MissingDependencyError` without CAP_NET_RAW and :class:`NetworkError`
        for an interface that does not exist (in the socket's namespace).
        """
        if self._thread is not None:
            raise RuntimeError("sniffer already started")
        sock = self._open()
        try:
            self._prepare(sock)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"sniffer-{self.interface}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Read what the socket still holds, stop the thread and close the socket.

        Idempotent. Re-raises (as :class:`NetworkError`) an error that ended the thread.
        """
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - the loop checks the flag every wake-up
            raise NetworkError(f"capture thread on {self.interface} did not stop in {timeout}s")
        self._thread = None
        if self._sock is not None:
            self._kernel_drops += self._read_kernel_drops(self._sock)
            self._sock.close()
            self._sock = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._raise_thread_error()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- results ---------------------------------------------------------------------------

    def drain(self) -> list[Packet]:
        """Segments captured since the previous ``drain()`` (or start), oldest first."""
        self._raise_thread_error()
        with self._cond:
            packets, self._pending = self._pending, []
        return packets

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every frame queued on the socket before this call has been read (and is
        in the next :meth:`drain`). False if the thread did not get there within ``timeout``
        seconds or is not running: ``drain()`` then returns what it has read."""
        thread = self._thread
        if thread is None:
            return False
        with self._cond:
            self._flush_asked += 1
            wanted = self._flush_asked
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"f")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._flush_done < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._error is not None or not thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def wait_for(self, predicate: Callable[[Sequence[Packet]], bool], timeout: float) -> bool:
        """Block until ``predicate(pending)`` is true or ``timeout`` seconds pass.

        ``pending`` is what the next :meth:`drain` would return; nothing is consumed. Returns
        the predicate's last value: a bounded wait for "the FIN's ACK has been seen".
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(tuple(self._pending)):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._cond.wait(remaining)

    def set_ports(self, ports: Iterable[int] | None) -> None:
        """Change the wanted ports (e.g. once an ephemeral port is known); applies at once."""
        new = None if ports is None else frozenset(ports)
        sock = self._sock
        if sock is not None and self._kernel_filter:
            # SO_ATTACH_FILTER replaces the old program atomically.
            self._attach(sock, new)
        self._ports = new

    @property
    def ports(self) -> frozenset[int] | None:
        return self._ports

    @property
    def stats(self) -> SnifferStats:
        return SnifferStats(
            frames=self._frames,
            kept=self._kept,
            outgoing_skipped=self._outgoing,
            other_traffic=self._other,
            decode_errors=self._decode_errors,
            overflow=self._overflow,
            kernel_filter=self._kernel_filter,
            kernel_drops=self._kernel_drops,
        )

    # -- socket set-up ---------------------------------------------------------------------

    def _open(self) -> socket.socket:
        try:
            return self._factory()
        except PermissionError as exc:
            raise MissingDependencyError(_NEED_RAW) from exc
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise MissingDependencyError(_NEED_RAW) from exc
            raise NetworkError(f"cannot open a packet socket: {exc.strerror or exc}") from exc

    def _bind(self, sock: socket.socket, protocol: int) -> None:
        try:
            sock.bind((self.interface, protocol))
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise MissingDependencyError(_NEED_RAW) from exc
            raise NetworkError(
                f"cannot capture on interface {self.interface!r}: {exc.strerror or exc}"
            ) from exc

    def _prepare(self, sock: socket.socket) -> None:
        # Bind with protocol 0 first: attached to the device but not yet receiving, and
        # getsockname() now reports the device type.
        self._bind(sock, 0)
        hatype: int = sock.getsockname()[3]
        if hatype not in _LINK_TYPES:
            raise NetworkError(
                f"cannot decode frames of interface {self.interface!r} (ARPHRD type {hatype})"
            )
        self.link_type = _LINK_TYPES[hatype]
        self.ignore_outgoing = (
            hatype == ARPHRD_LOOPBACK
            if self._ignore_outgoing_opt is None
            else self._ignore_outgoing_opt
        )
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        if self.ignore_outgoing:
            # Older kernels lack it: the user-space pkttype check still applies.
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        ports = self._ports
        self._kernel_filter = False
        if (
            self._want_kernel_filter
            and self.link_type == LinkType.ETHERNET
            and (ports is None or len(ports) <= MAX_PORTS)
        ):
            self._attach(sock, ports)
        self._read_kernel_drops(sock)  # reading resets the kernel's counters
        sock.setblocking(False)
        self._bind(sock, ETH_P_ALL)

    def _attach(self, sock: socket.socket, ports: frozenset[int] | None) -> None:
        try:
            attach_filter(sock, tcp_ports_program(ports))
        except (OSError, ValueError):
            self._kernel_filter = False  # user space still filters: only the cost changes
        else:
            self._kernel_filter = True

    @staticmethod
    def _read_kernel_drops(sock: socket.socket) -> int:
        try:
            raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        _packets, drops = struct.unpack("=II", raw)
        return int(drops)

    # -- the capture thread ----------------------------------------------------------------

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(
                    [sock.fileno(), self._wake_r], [], [], self._poll_interval
                )
                if self._wake_r in readable:
                    os.read(self._wake_r, 4096)  # stop() also writes: the flag says which
                with self._cond:
                    asked = self._flush_asked
                if asked > self._flush_done:
                    # Asked before this read began: what was queued then is read now.
                    while self._read_batch(sock):
                        pass
                    with self._cond:
                        self._flush_done = asked
                        self._cond.notify_all()
                elif sock.fileno() in readable:
                    self._read_batch(sock)
            # Final sweep: frames queued before stop() was called still belong to the step.
            while self._read_batch(sock):
                pass
        except BaseException as exc:  # reported by the next drain()/stop()
            self._error = exc
        finally:
            with self._cond:
                self._flush_done = self._flush_asked  # the final sweep read what was queued
                self._cond.notify_all()

    def _read_batch(self, sock: socket.socket) -> bool:
        """Read up to a batch of queued frames; True if the batch was full (more may wait)."""
        batch: list[Packet] = []
        full = True
        buf = self._buf
        for _ in range(_BATCH):
            try:
                # recvmsg_into a reused buffer: plain recvmsg(262144) would allocate (and
                # mmap/munmap) a quarter-megabyte bytes object for every frame.
                size, ancdata, msg_flags, addr = sock.recvmsg_into([buf], _ANCBUF)
            except BlockingIOError:
                full = False
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                continue
            packet = self._handle(bytes(buf[:size]), ancdata, msg_flags, addr)
            if packet is not None:
                batch.append(packet)
        if batch:
            with self._cond:
                room = self._max_packets - len(self._pending)
                if room < len(batch):
                    self._overflow += len(batch) - max(room, 0)
                    batch = batch[: max(room, 0)]
                self._pending.extend(batch)
                self._kept += len(batch)
                self._cond.notify_all()
        return full

    def _handle(
        self,
        data: bytes,
        ancdata: list[tuple[int, int, bytes]],
        msg_flags: int,
        addr: tuple[str, int, int, int, bytes],
    ) -> Packet | None:
        self._frames += 1
        if addr[0] != self.interface:
            # Only possible with a factory socket created with ETH_P_ALL, before our bind.
            self._other += 1
            return None
        if self.ignore_outgoing and addr[2] == PACKET_OUTGOING:
            self._outgoing += 1
            return None
        wall = _timestamp(ancdata)
        now_wall = time.time()
        now_mono = time.monotonic()
        if wall is None:
            wall = now_wall
        mono = wall + (now_mono - now_wall)
        orig_len = len(data)
        if msg_flags & socket.MSG_TRUNC:  # pragma: no cover - _BUFSIZE exceeds lo's GSO size
            orig_len += 1  # at least one byte more than we got; the exact size is unknown
        try:
            packet = decode_frame(
                data,
                timestamp=mono,
                wall_time=wall,
                interface=self.interface,
                link_type=self.link_type,
                orig_len=orig_len,
            )
        except DecodeError:
            self._decode_errors += 1
            return None
        ports = self._ports
        if packet is None or (
            ports is not None and packet.src_port not in ports and packet.dst_port not in ports
        ):
            self._other += 1
            return None
        return packet

    def _raise_thread_error(self) -> None:
        exc = self._error
        if exc is None:
            return
        self._error = None
        if isinstance(exc, OSError):
            raise NetworkError(f"packet capture on {self.interface} failed: {exc}") from exc
        raise NetworkError(f"packet capture on {self.interface} failed: {exc!r}") from exc


def _timestamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            if len(payload) >= 16:
                sec, nsec = struct.unpack_from("=qq", payload)
            elif len(payload) >= 8:  # 32-bit userland: struct timespec of two 32-bit longs
                sec, nsec = struct.unpack_from("=ii", payload)
            else:
                return None
            return float(sec) + float(nsec) / 1e9
    return None
