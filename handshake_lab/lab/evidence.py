"""Evidence beside the polled states: the segments on the wire and the kernel's transitions.

Polling ``ss``/psutil sees states; it cannot see the segments that caused them, nor states that
last microseconds. When the machine allows it (CAP_NET_RAW for AF_PACKET, real root and tracefs
for the ``sock:inet_sock_set_state`` tracepoint) a run also captures its segments and follows its
transitions; what is unavailable is said in ``notes`` instead of silently missing. Both are
optional: a lab's verdict comes from the polled states and outcomes alone.

The trace instance is recorded in the run's registry before it is created, so a run killed
with SIGKILL leaves a record that ``doctor --cleanup`` (or the next run) acts on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from handshake_lab.capture.conversation import (
    Check,
    check_fin_acks,
    check_handshake,
    conversations,
)
from handshake_lab.capture.decode import Packet
from handshake_lab.capture.sniffer import Sniffer, default_socket_factory
from handshake_lab.errors import HandshakeLabError
from handshake_lab.i18n.labels import label
from handshake_lab.observe.base import Address
from handshake_lab.observe.trace import TraceEvent, TraceFollower, trace_capability
from handshake_lab.placement.placed import Placed
from handshake_lab.tcp.machine import TRANSITIONS, Event
from handshake_lab.tcp.segments import Flags
from handshake_lab.tcp.states import TcpState
from handshake_lab.topo.netns import in_netns
from handshake_lab.topo.registry import KernelObject, RunRegistry, new_run_id

SocketFactory = Callable[[], Any]
TRACE_BLIND_SPOTS = label("note_trace_blind", "en")
"""The record keeps notes in English; the table shows this one in the run's language."""


class Evidence:
    """Optional packet capture and transition stream for one run."""

    def __init__(
        self,
        *,
        capture: bool,
        trace: bool,
        run_id: str,
        interface: str = "lo",
        socket_factory: SocketFactory | None = None,
        hosts: Collection[str] | None = None,
        require_capture: bool = False,
    ) -> None:
        self.want_capture = capture
        self.want_trace = trace
        self.run_id = run_id
        self.interface = interface
        self.socket_factory = socket_factory
        self.hosts = hosts
        self.require_capture = require_capture
        self.notes: list[str] = []
        self.packets: list[Packet] = []
        self.events: list[TraceEvent] = []
        self.capture_on = False
        self.trace_on = False
        self._sniffer: Any = None
        self._follower: Any = None
        self._registry: Any = None

    def describe(self) -> dict[str, str]:
        return {
            "capture": f"AF_PACKET on {self.interface}" if self.capture_on else "off",
            "trace": "sock:inet_sock_set_state" if self.trace_on else "off",
        }

    def start(self, ports: Collection[int]) -> None:
        """Start what is wanted and possible; record why anything is off."""
        if self.want_capture:
            self._start_capture(ports)
        if self.want_trace:
            self._start_trace(ports)

    def _start_capture(self, ports: Collection[int]) -> None:
        kwargs: dict[str, Any] = {"ports": sorted(ports)}
        if self.socket_factory is not None:
            kwargs["socket_factory"] = self.socket_factory
        sniffer = Sniffer(self.interface, **kwargs)
        try:
            sniffer.start()
        except HandshakeLabError as exc:
            if self.require_capture:
                raise
            self.notes.append(f"packets not captured: {exc}")
            return
        self._sniffer = sniffer
        self.capture_on = True

    def _start_trace(self, ports: Collection[int]) -> None:
        ok, reason = trace_capability()
        if not ok:
            self.notes.append(f"no transition stream: {reason}")
            return
        follower = TraceFollower(sorted(ports), self.run_id, hosts=self.hosts)
        registry = RunRegistry(self.run_id)
        registry.record(KernelObject("trace_instance", follower.name))
        try:
            follower.start()
        except HandshakeLabError as exc:
            registry.forget(KernelObject("trace_instance", follower.name))
            self.notes.append(f"no transition stream: {exc}")
            return
        self._follower = follower
        self._registry = registry
        self.trace_on = True
        self.notes.append(TRACE_BLIND_SPOTS)

    def collect(self) -> tuple[list[Packet], list[TraceEvent]]:
        """What arrived since the previous call (blocking briefly: call it in a thread)."""
        packets: list[Packet] = []
        events: list[TraceEvent] = []
        if self._follower is not None:
            with contextlib.suppress(HandshakeLabError):
                self._follower.flush(timeout=0.5)
            events = list(self._follower.drain())
            self.events.extend(events)
        if self._sniffer is not None:
            self._sniffer.flush(timeout=0.5)  # what crossed before this call, read or not
            packets = list(self._sniffer.drain())
            self.packets.extend(packets)
        return packets, events

    def stop(self) -> None:
        """Stop everything started; idempotent."""
        sniffer, self._sniffer = self._sniffer, None
        if sniffer is not None:
            with contextlib.suppress(Exception):
                sniffer.stop()
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.stop()
            if self._registry is not None:
                # forget() removes the file once nothing is left: in netns the namespaces
                # of this run are still recorded in it.
                self._registry.forget(KernelObject("trace_instance", follower.name))

    def checks(self) -> list[Check]:
        """The seed's arithmetic computed from the wire, per captured connection."""
        found: list[Check] = []
        for conv in conversations(self.packets):
            c_host, c_port = conv.client
            s_host, s_port = conv.server
            tup = (c_host, c_port, s_host, s_port)
            packets = [e.packet for e in conv.entries]
            for check in check_handshake(packets, tup) + check_fin_acks(packets, tup):
                found.append(
                    Check(
                        check.name, check.ok, f"{c_host}:{c_port}>{s_host}:{s_port} {check.detail}"
                    )
                )
        return found


def evidence_for(
    ends: Placed, *, capture: bool | None, trace: bool | None, pcap: bool
) -> Evidence | None:
    """Capture and trace when asked, or by default when the machine allows it, where the
    placement says the run's segments cross (``Placed.capture``)."""
    want_capture = True if capture is None or pcap else capture
    want_trace = trace if trace is not None else True
    if not (want_capture or want_trace):
        return None
    target = ends.capture
    factory: SocketFactory | None = None
    if target.netns is not None:
        netns = target.netns

        def factory() -> object:
            with in_netns(netns):
                return default_socket_factory()

    return Evidence(
        capture=want_capture,
        trace=want_trace,
        run_id=ends.run_id or new_run_id(),
        interface=target.interface,
        socket_factory=factory,
        hosts=set(target.hosts),
        require_capture=pcap or capture is True,
    )


def name_endpoints(
    tuples: Mapping[str, tuple[Address, Address | None] | None],
) -> dict[tuple[str, int], str]:
    """Map each known socket end (host, port) to its side name, for labelling segments."""
    names: dict[tuple[str, int], str] = {}
    for side, tup in tuples.items():
        if tup is None:
            continue
        local, remote = tup
        if remote is None or side.startswith("server"):
            # A listener's address names the server end; so does each server end's own (a
            # listener on a wildcard, ::, accepts on the address the client connected to).
            names.setdefault((local.host, local.port), "server")
        elif not side.startswith("listener"):
            names[(local.host, local.port)] = side
    return names


def segment_records(
    new: Sequence[Packet],
    every: Sequence[Packet],
    names: Mapping[tuple[str, int], str],
    t0: float,
) -> list[dict[str, Any]]:
    """JSON-ready segments with Wireshark-style relative numbers (bases over the whole run),
    each with its conversation (index in order of first appearance) and the end that sent it."""
    entries = {
        id(e.packet): (index, e)
        for index, conv in enumerate(conversations(every))
        for e in conv.entries
    }
    out: list[dict[str, Any]] = []
    for p in new:
        index, entry = entries.get(id(p), (None, None))
        src, dst = str(Address(p.src, p.src_port)), str(Address(p.dst, p.dst_port))
        out.append(
            {
                "t_ms": round((p.timestamp - t0) * 1000, 3),
                "from": names.get((p.src, p.src_port), src),
                "to": names.get((p.dst, p.dst_port), dst),
                "src": src,
                "dst": dst,
                "flags": p.segment.flags_text,
                "seq": p.seq,
                "ack": p.ack,
                "rel_seq": entry.rel_seq if entry else None,
                "rel_ack": entry.rel_ack if entry else None,
                "len": p.payload_len,
                "win": p.window,
                "options": p.options.describe(),
                "label": entry.label if entry else p.segment.flags_text,
                "conv": index,
                "sender": entry.sender if entry else None,
            }
        )
    return out


CAUSE_SLACK_S = 0.000005
CAUSE_WINDOW_S = 0.25


def segment_causes(old: TcpState, new: TcpState) -> list[Callable[[Flags], bool]] | None:
    """Which received segments can move a socket from ``old`` to ``new``, by the state
    machine's table: a list of flag tests, an empty list if only application calls (connect,
    close, listen...) lead there, or None for a move the table does not have: any segment then.
    A traced "-> CLOSE" also counts the table's "-> TIME_WAIT" causes (the tracepoint shows the
    TIME_WAIT mini-socket taking over as a move to CLOSE)."""
    tests: dict[Event, Callable[[Flags], bool]] = {
        Event.RCV_SYN: lambda f: Flags.SYN in f and Flags.ACK not in f,
        Event.RCV_SYN_ACK: lambda f: Flags.SYN in f and Flags.ACK in f,
        Event.RCV_ACK: lambda f: Flags.ACK in f and not f & (Flags.SYN | Flags.FIN | Flags.RST),
        Event.RCV_FIN: lambda f: Flags.FIN in f,
        Event.RCV_FIN_ACK: lambda f: Flags.FIN in f and Flags.ACK in f,
        Event.RCV_RST: lambda f: Flags.RST in f,
    }
    # The tracepoint never reports TIME_WAIT: the mini-socket taking over shows as "-> CLOSE".
    targets = {new, TcpState.TIME_WAIT} if new is TcpState.CLOSE else {new}
    events = [
        ev for (state, ev), tr in TRANSITIONS.items() if state is old and tr.next_state in targets
    ]
    if not events:
        return None
    return [tests[ev] for ev in events if ev in tests]


def _next_syn_source(
    packets: Sequence[Packet], after: float, host: str, remote: tuple[str, int]
) -> tuple[str, int] | None:
    """The source of the first SYN (no ACK) from ``host`` to ``remote`` at or after ``after``
    (within ``CAUSE_WINDOW_S``): the socket a port-0 ``CLOSE -> SYN_SENT`` turned into."""
    for p in packets:
        if p.timestamp < after - CAUSE_SLACK_S or p.timestamp - after > CAUSE_WINDOW_S:
            continue
        is_syn = Flags.SYN in p.flags and Flags.ACK not in p.flags
        if is_syn and p.src == host and (p.dst, p.dst_port) == remote:
            return (p.src, p.src_port)
    return None


def transition_records(
    events: Sequence[TraceEvent],
    sides: Mapping[tuple[tuple[str, int], tuple[str, int] | None], str],
    packets: Sequence[Packet],
    t0: float,
) -> list[dict[str, Any]]:
    """JSON-ready state transitions, each with the segment that most likely caused it: the last
    segment that side received at or shortly before the transition (none for an app call)."""
    out: list[dict[str, Any]] = []
    for ev in events:
        if ev.kind != "state" or ev.old is None or ev.new is None:
            continue
        local = (ev.local.host, ev.local.port)
        remote = (ev.remote.host, ev.remote.port) if ev.remote else None
        if ev.local.port == 0 and remote is not None:
            # CLOSE -> SYN_SENT is traced before the kernel picks the local port: the socket
            # is the one whose SYN from this host to that peer was captured next.
            found = _next_syn_source(packets, ev.time, local[0], remote)
            if found is None:  # no capture: the one socket of that host connecting there
                same = [lo for (lo, re_) in sides if lo[0] == local[0] and re_ == remote]
                found = same[0] if len(same) == 1 else None
            local = found or local
        side = sides.get((local, remote))
        if side is None and remote is None:
            side = sides.get((local, None))  # a listener's own moves
        if side is None:
            # No side owns it (a churn connection, a server end of a second client...): named
            # by its addresses, never by a listener that shares its local port.
            where = str(Address(*local))
            side = f"{where} > {Address(*remote)}" if remote is not None else where
        cause = None
        tests = segment_causes(ev.old, ev.new)
        if tests == []:
            cause = "application call"
        else:
            for p in reversed(packets):
                # The tap sees a segment before the stack processes it; 5 us of slack covers
                # the conversion between the capture and trace clocks.
                if p.timestamp > ev.time + CAUSE_SLACK_S:
                    continue
                if ev.time - p.timestamp > CAUSE_WINDOW_S:
                    break
                to_us = (p.dst, p.dst_port) == local
                if not to_us or (remote is not None and (p.src, p.src_port) != remote):
                    continue
                if tests is None or any(test(p.flags) for test in tests):
                    cause = p.segment.flags_text
                    break
        out.append(
            {
                "t_ms": round((ev.time - t0) * 1000, 3),
                "side": side,
                "old": ev.old.name,
                "new": ev.new.name,
                "cause": cause,
                "local": str(Address(*local)),
                "remote": str(ev.remote) if ev.remote else None,
            }
        )
    return out
