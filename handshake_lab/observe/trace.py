"""The kernel's transition stream: tracepoints instead of polling.

Polling ``ss``/psutil shows a state only if it lasts until the next poll; on loopback a whole
handshake takes ~100 us, so most states are never seen. The tracepoint
``sock:inet_sock_set_state`` fires on every ``tcp_set_state()`` call, with a timestamp, and the
``tcp:*`` tracepoints add retransmits and resets. This module reads them through tracefs.

Theory of operation
-------------------
``TraceFollower`` creates a private ftrace instance ``/sys/kernel/tracing/instances/hslab-<run
id>`` (its own ring buffer and event switches: the host's top-level trace settings are never
touched), sets its ``trace_clock`` to ``mono`` so event times are CLOCK_MONOTONIC seconds and
compare with ``time.monotonic()``, installs a per-event filter in the kernel (``sport == P ||
dport == P`` for each port; events are global across network namespaces and carry no netns
field, so the port filter is what keeps the volume down), enables the events and reads the
instance's ``trace_pipe`` on a background thread. ``stop()`` disables the events and removes
the instance. The ``hslab-`` prefix lets ``doctor --cleanup`` remove an instance a crashed run
left behind.

Parsing (``observe.trace_parse``: ``parse_trace_line``) is pure and tested on captured lines
(``tests/unit/data/trace/``); this module is the I/O shell. Lines look like this (Linux 6.18,
``trace_clock=mono``)::

    python-9949 [001] ..s2. 846.361384: inet_sock_set_state: family=AF_INET
        protocol=IPPROTO_TCP sport=34259 dport=35794 saddr=127.0.0.1 daddr=127.0.0.1
        saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_LISTEN
        newstate=TCP_SYN_RECV
    <idle>-0 [000] .Ns2. 849.080152: tcp_retransmit_skb: skbaddr=... skaddr=...
        family=AF_INET sport=35836 dport=34259 saddr=... daddr=... saddrv6=... daddrv6=...
        state=TCP_SYN_SENT err=0
    python-9949 [001] ..s1. 846.563412: tcp_send_reset: skbaddr=... skaddr=...
        src=127.0.0.1:34259 dest=127.0.0.1:35812 state=UNKNOWN reason=NO_SOCKET

(one line each; wrapped here). The task name and pid are whoever was on the CPU, often
``<idle>-0`` or ``ksoftirqd``: they say nothing about which program owns the socket.

What the stream cannot see (fill these from ``ss``)
---------------------------------------------------
- TIME_WAIT: the active closer is reported FIN_WAIT2 -> CLOSE (or CLOSING -> CLOSE); the
  timewait mini-socket that replaces it has no ``tcp_set_state()`` call.
- Request sockets: a half-open server side (SYN received, SYN-ACK sent) lives in a request
  socket that is not traced. The child socket is reported LISTEN -> SYN_RECV -> ESTABLISHED
  microseconds apart, when the handshake *completes*.
- CLOSE -> SYN_SENT is reported with sport=0: connect() picks the port afterwards.
- Address fields: for an AF_INET6 socket the IPv4 fields are garbage and vice versa; the
  parser reads the family's own fields only.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import re
import select
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from types import TracebackType

from handshake_lab.errors import MissingDependencyError, ObserverError
from handshake_lab.i18n.doctor import doctor_text
from handshake_lab.observe.aliases import address
from handshake_lab.observe.trace_parse import (
    EVENTS,
    INSTANCE_PREFIX,
    TRACEFS,
    StateSpan,
    TraceEvent,
    TraceParseError,
    durations,
    parse_lost_line,
    parse_trace_line,
    split_line,
)
from handshake_lab.topo.userns import in_user_namespace

NEED_ROOT = "the kernel transition stream needs root: tracefs is root-only"
DEFAULT_BUFFER_KB = 4096
"""Ring buffer per CPU of our instance. A lab's few events fit in any size; a busy port
(``watch``) makes ~8 events per connection and the Python reader parses ~100k lines/s, so
bursts are absorbed here. An overflow is counted in ``lost_events``, never silent."""
BATCH_DELAY = 0.002
"""Seconds the reader lets events accumulate after a read: bounds the extra latency."""
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_mount_lock = threading.Lock()


def _tracefs_ready(root: Path) -> bool:
    try:
        return (root / "instances").is_dir() and (root / "events").is_dir()
    except OSError:  # Python < 3.12 raises for EACCES (a user namespace's view of tracefs)
        return False


IN_USERNS = doctor_text("trace_in_userns", "en")


def _in_user_namespace() -> bool:
    return in_user_namespace()


def _kernel_has_tracefs() -> bool:
    try:
        text = Path("/proc/filesystems").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(line.split()[-1:] == ["tracefs"] for line in text.splitlines())


TRACE_CASES = (
    "not_root",
    "in_userns",
    "no_tracefs",
    "no_dir",
    "will_mount",
    "no_tracepoint",
    "no_instances",
    "missing_events",
    "ready",
)
"""Every case ``trace_facts`` names; each is worded in ``i18n.doctor`` (``trace_CASE``), in
English for the run header's note and ``doctor --lang en``, and in Chinese."""


def trace_facts(root: Path = TRACEFS) -> tuple[bool, str, dict[str, str]]:
    """Can this process follow the transition stream? ``(ok, case, values)``: the case is one
    of ``TRACE_CASES``, whose text (``i18n.doctor``) the values fill. Changes nothing: if
    tracefs is not mounted yet, it says it will be mounted on first use (the events cannot be
    checked until then)."""
    if os.geteuid() != 0:
        return False, "not_root", {"uid": str(os.geteuid())}
    if _in_user_namespace():
        return False, "in_userns", {}
    if not _tracefs_ready(root):
        if not _kernel_has_tracefs():
            return False, "no_tracefs", {}
        if not root.is_dir():
            return False, "no_dir", {"root": str(root)}
        return True, "will_mount", {"root": str(root)}
    if not (root / "events" / "sock" / "inet_sock_set_state").is_dir():
        return False, "no_tracepoint", {}
    if not os.access(root / "instances", os.W_OK):
        return False, "no_instances", {"path": str(root / "instances")}
    missing = [name for name in EVENTS if not (root / "events" / name).is_dir()]
    if missing:
        return True, "missing_events", {"root": str(root), "events": ", ".join(missing)}
    return True, "ready", {"root": str(root)}


def trace_capability(root: Path = TRACEFS) -> tuple[bool, str]:
    """Can this process follow the transition stream? ``(ok, one-line reason)`` in English
    (``trace_facts``)."""
    ok, case, values = trace_facts(root)
    return ok, doctor_text(f"trace_{case}", "en", values)


def ensure_tracefs(root: Path = TRACEFS) -> None:
    """Mount tracefs at ``root`` unless it is mounted already; root only.

    The mount is left in place on exit: it is the kernel's standard location (systemd mounts
    it at boot) and other runs may be using it.
    """
    if _tracefs_ready(root):
        return
    if os.geteuid() != 0:
        raise MissingDependencyError(f"{NEED_ROOT} (running as uid {os.geteuid()})")
    if _in_user_namespace():
        raise MissingDependencyError(IN_USERNS)
    with _mount_lock:
        if _tracefs_ready(root):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.mount(b"nodev", os.fsencode(root), b"tracefs", 0, None)
        if result != 0:
            code = ctypes.get_errno()
            raise MissingDependencyError(
                f"cannot mount tracefs at {root}: {os.strerror(code)}"
                " (tracefs is not available inside a user namespace)"
            )
    if not _tracefs_ready(root):
        raise MissingDependencyError(f"tracefs mounted at {root} but has no instances/ or events/")


def _has_port_fields(format_path: Path) -> bool:
    try:
        text = format_path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return "field:__u16 sport;" in text and "field:__u16 dport;" in text


def port_filter(ports: Collection[int], *, tcp_only: bool = False) -> str:
    """The kernel filter expression for ``ports``: ``sport == P || dport == P ...``."""
    terms = " || ".join(f"sport == {p} || dport == {p}" for p in sorted(set(ports)))
    return f"protocol == 6 && ({terms})" if tcp_only else terms


class TraceFollower:
    """Follow TCP state transitions (and retransmits, resets) on ``ports``, live.

    Use as a context manager, or call ``start()`` and make sure ``stop()`` runs::

        with TraceFollower([port], run_id) as follower:
            ...  # drive the sockets
            follower.flush()
            events = follower.drain()

    ``hosts`` (optional) keeps only events with one end on one of those addresses: the kernel
    filter is by port only, and events from every network namespace reach the stream.
    """

    def __init__(
        self,
        ports: Collection[int],
        run_id: str,
        *,
        hosts: Collection[str] | None = None,
        root: Path = TRACEFS,
        buffer_kb: int = DEFAULT_BUFFER_KB,
    ) -> None:
        if not ports:
            raise ValueError("TraceFollower needs at least one port")
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} out of range 1..65535")
        if _RUN_ID.fullmatch(run_id) is None:
            raise ValueError(f"run id {run_id!r} must be 1-64 of [A-Za-z0-9_.-]")
        if buffer_kb < 4:
            raise ValueError(f"buffer_kb {buffer_kb} too small (at least 4)")
        self.ports = frozenset(ports)
        self.buffer_kb = buffer_kb
        self.run_id = run_id
        self.hosts = None if hosts is None else frozenset(address(h, 0).host for h in hosts)
        self.name = f"{INSTANCE_PREFIX}{run_id}"
        self.root = root
        self.path = root / "instances" / self.name
        self.enabled: list[str] = []
        """The events (``system/name``) enabled in the instance."""
        self.missing: list[str] = []
        """Events of ``EVENTS`` this kernel does not have."""
        self.lost_events = 0
        """Events the kernel dropped because the ring buffer overflowed (``[LOST n EVENTS]``)."""
        self._cond = threading.Condition()
        self._events: list[TraceEvent] = []
        self._error: ObserverError | None = None
        self._markers: set[str] = set()
        self._marker_count = 0
        self._created = False
        self._started = False
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._wake: tuple[int, int] | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> TraceFollower:
        """Create the instance, set its clock and filters, enable the events, start reading."""
        if self._started:
            raise RuntimeError("a TraceFollower starts once")
        self._started = True
        ensure_tracefs(self.root)
        if not (self.root / "events" / "sock" / "inet_sock_set_state").is_dir():
            raise MissingDependencyError(
                "the kernel has no tracepoint sock:inet_sock_set_state (Linux >= 4.16)"
            )
        try:
            self.path.mkdir()
        except FileExistsError:
            raise ObserverError(
                f"trace instance {self.path} already exists: another run uses this run id, "
                "or a crashed run left it (doctor --cleanup removes it)"
            ) from None
        except PermissionError as error:
            raise MissingDependencyError(f"{NEED_ROOT}: cannot create {self.path}") from error
        except OSError as error:
            raise ObserverError(f"cannot create trace instance {self.path}: {error}") from error
        self._created = True
        atexit.register(self._stop_at_exit)
        try:
            self._configure()
        except BaseException as error:
            try:
                self.stop()
            except ObserverError as cleanup:
                error.add_note(f"cleanup also failed: {cleanup}")
            raise
        return self

    def _configure(self) -> None:
        self._write("trace_clock", "mono")
        self._write("buffer_size_kb", str(self.buffer_kb))
        for name, kind in EVENTS.items():
            event_dir = self.path / "events" / name
            if not event_dir.is_dir():
                self.missing.append(name)
                continue
            if kind == "state":
                self._write(f"events/{name}/filter", port_filter(self.ports, tcp_only=True))
            elif _has_port_fields(event_dir / "format"):
                self._write(f"events/{name}/filter", port_filter(self.ports))
            # else (tcp_send_reset since 6.10: src/dest sockaddrs only): filtered here.
        read_fd = os.open(self.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._fd = read_fd
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(
            target=self._read_loop, name=f"hslab-trace-{self.run_id}", daemon=True
        )
        self._thread.start()
        for name in EVENTS:
            if name not in self.missing:
                self._write(f"events/{name}/enable", "1")
                self.enabled.append(name)
        self._write("tracing_on", "1")

    def stop(self) -> None:
        """Disable the events, stop reading, remove the instance. Idempotent.

        Events already in the ring buffer are read before the reader stops, so ``drain()``
        after ``stop()`` still returns them. Raises ``ObserverError`` if the instance could
        not be removed (``doctor --cleanup`` removes it later).
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self._stop_at_exit)
        problems: list[str] = []
        for name in reversed(self.enabled):
            try:
                (self.path / "events" / name / "enable").write_text("0", encoding="ascii")
            except OSError as error:
                if error.errno != errno.ENOENT:
                    problems.append(f"disable {name}: {error.strerror}")
        self._stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                problems.append("the reader thread did not stop within 5 s")
        for fd in (self._fd, *(self._wake or ())):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake = None
        if self._created:
            problem = self._remove_instance()
            if problem is not None:
                problems.append(problem)
        with self._cond:
            self._cond.notify_all()
        if problems:
            raise ObserverError(f"trace instance {self.name}: " + "; ".join(problems))

    def _stop_at_exit(self) -> None:
        # A follower nobody stopped (a crash path that skipped __exit__): remove the instance
        # on interpreter exit. A kill -9 or an unhandled SIGTERM skips this too; the hslab-
        # prefix lets ``doctor --cleanup`` remove what is left.
        with contextlib.suppress(ObserverError):
            self.stop()

    def _remove_instance(self) -> str | None:
        # rmdir fails with EBUSY while any process still has a file of the instance open
        # (our reader closes first; a shell `cat trace_pipe` would keep it busy): retry briefly.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                self.path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno == errno.EBUSY and time.monotonic() < deadline:
                    self._stopping.wait(0.05)
                    continue
                return f"cannot remove {self.path}: {error.strerror}"
            self._created = False
            return None

    def __enter__(self) -> TraceFollower:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except ObserverError as cleanup:
            exc.add_note(f"trace cleanup also failed: {cleanup}")

    # -- reading -----------------------------------------------------------------------------

    def _write(self, relative: str, value: str) -> None:
        target = self.path / relative
        try:
            target.write_text(value, encoding="ascii")
        except OSError as error:
            hint = " (the kernel rejected it)" if error.errno == errno.EINVAL else ""
            raise ObserverError(
                f"cannot write {value!r} to {target}: {error.strerror}{hint}"
            ) from error

    def _read_loop(self) -> None:
        if self._fd is None or self._wake is None:
            raise RuntimeError("the reader runs only after start() opened trace_pipe")
        fd, wake = self._fd, self._wake[0]
        pending = b""
        try:
            while True:
                stopping = self._stopping.is_set()
                if not stopping:
                    # The timeout bounds latency should a wake-up be missed.
                    select.select([fd, wake], [], [], 0.1)
                chunk = self._read_available(fd)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    self._handle(lines)
                    # Batch: the kernel wakes us per event, and a Python wake-up per event
                    # costs the traced program (same process, same GIL) ~30 us each.
                    self._stopping.wait(BATCH_DELAY)
                elif stopping:
                    return
        except OSError as error:
            with self._cond:
                self._error = ObserverError(f"reading {self.path / 'trace_pipe'}: {error}")
                self._cond.notify_all()

    @staticmethod
    def _read_available(fd: int) -> bytes:
        try:
            return os.read(fd, 1 << 16)
        except BlockingIOError:
            return b""

    def _handle(self, raw_lines: list[bytes]) -> None:
        events: list[TraceEvent] = []
        markers: list[str] = []
        error: ObserverError | None = None
        lost_total = 0
        for raw in raw_lines:
            line = raw.decode("utf-8", errors="replace")
            lost = parse_lost_line(line)
            if lost is not None:
                lost_total += lost
                continue
            split = split_line(line)
            if split is not None and split.event == "tracing_mark_write":
                markers.append(split.body.strip())
                continue
            try:
                event = parse_trace_line(line)
            except ObserverError as problem:
                error = error or problem
                continue
            if event is not None and self._wanted(event):
                events.append(event)
        with self._cond:
            self._events.extend(events)
            self._markers.update(markers)
            self.lost_events += lost_total
            if error is not None and self._error is None:
                self._error = error
            self._cond.notify_all()

    def _wanted(self, event: TraceEvent) -> bool:
        ends = [event.local] if event.remote is None else [event.local, event.remote]
        if not any(end.port in self.ports for end in ends):
            return False
        return self.hosts is None or any(end.host in self.hosts for end in ends)

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def drain(self) -> list[TraceEvent]:
        """The events read since the last ``drain()``, oldest first.

        Raises ``ObserverError`` (once) if a line could not be parsed or reading failed; the
        events stay buffered for the next call.
        """
        with self._cond:
            self._raise_pending()
            events, self._events = self._events, []
            return events

    def wait_for(self, match: Callable[[TraceEvent], bool], timeout: float) -> TraceEvent | None:
        """The first undrained event for which ``match`` is true, waiting up to ``timeout`` s.

        Does not consume events. Returns ``None`` on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._raise_pending()
                for event in self._events:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return None
                self._cond.wait(remaining)

    def flush(self, timeout: float = 2.0) -> None:
        """Return once every event the kernel recorded before this call has been read.

        Writes a marker into the instance's ring buffer and waits for the reader to reach it.
        Raises ``ObserverError`` if it does not arrive within ``timeout`` seconds.
        """
        if not self._started or self._stopped:
            raise ObserverError("flush() needs a running TraceFollower")
        self._marker_count += 1
        token = f"hslab-sync-{self.run_id}-{self._marker_count}"
        self._write("trace_marker", token)
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._markers:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._error is not None:
                    break
                self._cond.wait(remaining)
            if token in self._markers:
                self._markers.discard(token)
                return
            self._raise_pending()
        raise ObserverError(f"trace stream {self.name} did not catch up within {timeout} s")


__all__ = [  # the parser's records too: callers read the stream from one module
    "EVENTS",
    "TRACEFS",
    "TRACE_CASES",
    "StateSpan",
    "TraceEvent",
    "TraceFollower",
    "TraceParseError",
    "durations",
    "ensure_tracefs",
    "port_filter",
    "trace_capability",
    "trace_facts",
]
