"""The pure half of the transition stream: tracefs lines to ``TraceEvent`` records.

No files, no threads: text in, records (or ``TraceParseError``) out, tested on captured lines
(``tests/unit/data/trace/``). ``observe.trace`` has the theory of operation, what the stream
cannot see, and the I/O shell (the trace instance and its reader thread).
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import UnknownStateError, normalise_host
from handshake_lab.observe.base import Address
from handshake_lab.tcp.states import TcpState

SOURCE = "trace"

TRACEFS = Path("/sys/kernel/tracing")
"""Where tracefs is (or gets) mounted."""

INSTANCE_PREFIX = "hslab-"
"""Every instance this tool creates is named ``hslab-<run id>``; cleanup relies on it."""

TraceKind = Literal["state", "retransmit", "retransmit_synack", "send_reset", "receive_reset"]

EVENTS: Mapping[str, TraceKind] = MappingProxyType(
    {
        "sock/inet_sock_set_state": "state",
        "tcp/tcp_retransmit_skb": "retransmit",
        "tcp/tcp_retransmit_synack": "retransmit_synack",
        "tcp/tcp_send_reset": "send_reset",
        "tcp/tcp_receive_reset": "receive_reset",
    }
)
"""The tracepoints we enable (``system/name`` under ``events/``) and the kind each yields."""

_KIND_BY_NAME: Mapping[str, TraceKind] = MappingProxyType(
    {path.split("/", 1)[1]: kind for path, kind in EVENTS.items()}
)

TRACE: Mapping[str, TcpState] = MappingProxyType({f"TCP_{s.name}": s for s in TcpState})
"""Alias table of the tracepoints: ``__print_symbolic`` prints ``TCP_<tcp_states.h name>``.

Every value of ``include/net/tcp_states.h``, ``TCP_NEW_SYN_RECV`` included, spelled exactly as
the kernel's print format does (``TCP_FIN_WAIT1``, ``TCP_CLOSE``).
"""


def from_trace(spelling: str) -> TcpState:
    """``"TCP_FIN_WAIT2"`` -> ``TcpState.FIN_WAIT2``; raise ``UnknownStateError`` otherwise."""
    try:
        return TRACE[spelling]
    except KeyError:
        raise UnknownStateError(SOURCE, spelling) from None


class TraceParseError(ObserverError):
    """A line of one of our events did not have the shape its format promises."""

    def __init__(self, line: str, problem: str) -> None:
        self.line = line
        self.problem = problem
        shown = line if len(line) <= 200 else line[:200] + "..."
        super().__init__(f"unreadable trace line ({problem}): {shown!r}")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One tracepoint hit.

    ``time`` is CLOCK_MONOTONIC seconds (compare with ``time.monotonic()``). ``local`` is the
    socket's own end (for ``send_reset``: the end that sent the RST); ``remote`` is ``None``
    when the kernel reports no peer (a listener: dport 0 and an unspecified address).
    ``old``/``new`` are set for ``state`` events only. ``state`` is the socket's state at a
    retransmit or a sent RST (``None`` if the kernel had no socket, e.g. RST to a closed port).
    ``reason`` is the ``tcp_send_reset`` reason (``NO_SOCKET``, ``TCP_ABORT_ON_CLOSE``, ...).
    """

    time: float
    kind: TraceKind
    local: Address
    remote: Address | None
    old: TcpState | None = None
    new: TcpState | None = None
    state: TcpState | None = None
    reason: str | None = None

    @property
    def ports(self) -> tuple[int, int]:
        """(local port, remote port); the remote port is 0 for a listener."""
        return (self.local.port, 0 if self.remote is None else self.remote.port)


# comm-pid [(tgid)] [cpu] [flags] timestamp: event: body
_LINE = re.compile(
    r"\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s(?P<body>.*)"
)
_LOST = re.compile(r"CPU:(?P<cpu>\d+) \[LOST (?P<count>\d+) EVENTS\]")
_SOCKADDR = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d+)")
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})


class _Line(NamedTuple):
    time: float
    event: str
    body: str


def split_line(line: str) -> _Line | None:
    """The timestamp, event name and body of a trace_pipe line; ``None`` for other lines."""
    match = _LINE.fullmatch(line.rstrip("\r\n"))
    if match is None:
        return None
    return _Line(float(match["ts"]), match["event"], match["body"])


def parse_lost_line(line: str) -> int | None:
    """``CPU:0 [LOST 2916 EVENTS]`` -> 2916: the ring buffer overflowed; else ``None``."""
    match = _LOST.fullmatch(line.strip())
    return None if match is None else int(match["count"])


def _fields(line: str, body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in body.split():
        key, sep, value = token.partition("=")
        if not sep or not key or key in fields:
            raise TraceParseError(line, f"bad field {token!r}")
        fields[key] = value
    return fields


def _get(line: str, fields: Mapping[str, str], key: str) -> str:
    try:
        return fields[key]
    except KeyError:
        raise TraceParseError(line, f"no {key}=") from None


def _port(line: str, text: str) -> int:
    if not text.isdecimal() or not text.isascii():
        raise TraceParseError(line, f"bad port {text!r}")
    port = int(text)
    if port > 65535:
        raise TraceParseError(line, f"bad port {text!r}")
    return port


# The same few hosts recur on every line; ipaddress parsing is most of the parse cost.
_normalised_host = functools.lru_cache(maxsize=512)(normalise_host)


def _address(line: str, host: str, port_text: str) -> Address:
    port = _port(line, port_text)
    try:
        return Address(_normalised_host(host), port)
    except ValueError:
        raise TraceParseError(line, f"bad address {host!r}") from None


def _is_unspecified(host: str) -> bool:
    return host in _UNSPECIFIED


def _ends(line: str, fields: Mapping[str, str]) -> tuple[Address, Address | None]:
    """The socket's (local, remote) from ``sport/saddr...`` or from ``src/dest``."""
    if "src" in fields or "dest" in fields:
        ends: list[Address] = []
        for key in ("src", "dest"):
            match = _SOCKADDR.fullmatch(_get(line, fields, key))
            if match is None:
                raise TraceParseError(line, f"bad {key}=")
            ends.append(_address(line, match["v6"] or match["v4"], match["port"]))
        local, remote = ends
    else:
        family = fields.get("family")
        if family == "AF_INET":
            suffix = ""
        elif family == "AF_INET6":
            suffix = "v6"
        elif family is None:
            # Older formats without family: the v6 fields hold a mapped address for IPv4.
            suffix = "v6" if "saddrv6" in fields else ""
        else:
            raise TraceParseError(line, f"unknown family {family!r}")
        sport = _get(line, fields, "sport")
        dport = _get(line, fields, "dport")
        local = _address(line, _get(line, fields, "saddr" + suffix), sport)
        remote = _address(line, _get(line, fields, "daddr" + suffix), dport)
    if remote.port == 0 and _is_unspecified(remote.host):
        return local, None
    return local, remote


def _state(line: str, spelling: str) -> TcpState:
    try:
        return from_trace(spelling)
    except UnknownStateError as error:
        raise UnknownStateError(SOURCE, spelling, context=line[:200]) from error


def parse_trace_line(line: str) -> TraceEvent | None:
    """Parse one ``trace_pipe`` line of the events in ``EVENTS``.

    Returns ``None`` for anything that is not one of those events (headers, markers, ``LOST``
    lines, other events) and for ``inet_sock_set_state`` of other protocols (SCTP, MPTCP).
    Raises ``TraceParseError`` / ``UnknownStateError`` (both ``ObserverError``) for a line
    of one of our events that does not have its documented shape.
    """
    split = split_line(line)
    if split is None:
        return None
    kind = _KIND_BY_NAME.get(split.event)
    if kind is None:
        return None
    fields = _fields(line, split.body)
    if kind == "state" and _get(line, fields, "protocol") != "IPPROTO_TCP":
        return None
    local, remote = _ends(line, fields)
    old = new = state = None
    reason = None
    if kind == "state":
        old = _state(line, _get(line, fields, "oldstate"))
        new = _state(line, _get(line, fields, "newstate"))
    elif "state" in fields and fields["state"] != "UNKNOWN":
        state = _state(line, fields["state"])
    if kind == "send_reset":
        reason = fields.get("reason")
    return TraceEvent(split.time, kind, local, remote, old, new, state, reason)


def parse_trace(text: str) -> list[TraceEvent]:
    """Every event of ``text`` (many lines), in order; see ``parse_trace_line``."""
    events: list[TraceEvent] = []
    for line in text.splitlines():
        event = parse_trace_line(line)
        if event is not None:
            events.append(event)
    return events


# -- time spent in each state ------------------------------------------------------------


class StateSpan(NamedTuple):
    """One stay of one socket (4-tuple) in one state; ``left_at`` is ``None`` if still there."""

    local: Address
    remote: Address | None
    state: TcpState
    entered_at: float
    left_at: float | None

    @property
    def duration(self) -> float | None:
        return None if self.left_at is None else self.left_at - self.entered_at


def durations(events: Iterable[TraceEvent]) -> list[StateSpan]:
    """Time spent in each state per 4-tuple, from the ``state`` events (others are ignored).

    Each transition ends the open span of its 4-tuple and opens one in the new state; CLOSE
    opens none (the socket is gone). Sorted by ``entered_at``.

    What this cannot report, so the caller fills it from ``ss``:

    - TIME_WAIT. An active closer's FIN_WAIT2 (or CLOSING) span ends with -> CLOSE when the
      timewait mini-socket takes over: TIME_WAIT starts at that ``left_at`` (unless the
      connection was reset) and lasts 60 s.
    - The real half-open time of a server. The SYN_RECV span of an accepted connection starts
      when the handshake completed (the child socket is created then); the time the request
      socket waited for the final ACK is not traced.
    - A state entered before the follower started: the first event of a 4-tuple that is not
      CLOSE -> X only ends a stay whose start is unknown, so no span is reported for it.

    CLOSE -> SYN_SENT comes with local port 0. Its span is matched to the first later event
    from SYN_SENT with the same local host and remote end (oldest first, as connect() picks
    ports in call order) and takes that event's local port; until then it keeps port 0.
    """
    state_events = sorted((e for e in events if e.kind == "state"), key=lambda e: e.time)
    spans: list[_Span] = []
    open_spans: dict[tuple[Address, Address | None], _Span] = {}
    unbound: dict[tuple[str, Address | None], deque[_Span]] = {}
    for event in state_events:
        if event.new is None:
            continue
        key = (event.local, event.remote)
        if event.new == TcpState.SYN_SENT and event.local.port == 0:
            span = _Span(event.local, event.remote, event.new, event.time)
            unbound.setdefault((event.local.host, event.remote), deque()).append(span)
            spans.append(span)
            continue
        ending = open_spans.pop(key, None)
        if ending is None and event.old == TcpState.SYN_SENT:
            waiting = unbound.get((event.local.host, event.remote))
            if waiting:
                ending = waiting.popleft()
                ending.local = event.local
        if ending is not None:
            ending.left_at = event.time
        if event.new != TcpState.CLOSE:
            span = _Span(event.local, event.remote, event.new, event.time)
            open_spans[key] = span
            spans.append(span)
    result = [StateSpan(s.local, s.remote, s.state, s.entered_at, s.left_at) for s in spans]
    result.sort(key=lambda s: s.entered_at)
    return result


@dataclass(slots=True)
class _Span:
    local: Address
    remote: Address | None
    state: TcpState
    entered_at: float
    left_at: float | None = None


# -- tracefs: capability, mount, the follower ------------------------------------------------
