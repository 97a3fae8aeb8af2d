"""The RFC 9293 TCP connection state machine, as one literal table (sans-IO).

Theory of operation
-------------------
A TCP connection is one endpoint's view of a 4-tuple, in one of the states of RFC 9293
section 3.3.2 (Figure 5), spelled here with Linux's names (:class:`TcpState`; the RFC's CLOSED
is ``CLOSE``). It moves only when an *event* happens to it (section 3.10, Event Processing):
the application calls listen/connect/close/shutdown/abort (3.10.1-3.10.5), a segment arrives
(3.10.7), or a timer expires (3.10.8). :data:`TRANSITIONS` maps every meaningful
``(state, event)`` pair to a :class:`Transition`: the next state, the segment(s) this endpoint
sends in response (with the flags Linux puts on the wire), an explanation key for the text
layer, and the RFC section that specifies it. :func:`step` is a lookup in that table and
nothing else; a pair missing from the table raises :class:`IllegalTransition`, and
:class:`Connection` keeps its state unchanged when that happens. :func:`transitions_from`,
:data:`paths` and the texts of ``handshake_lab.i18n.machine`` are all derived from, or
checked against, the same table, so the explanations cannot drift from the model.

Opening (3.5): ``connect()`` sends SYN (SYN_SENT); a listener that receives a SYN answers
SYN+ACK and the new connection is SYN_RECV; the client's SYN_SENT + SYN+ACK -> ESTABLISHED
sending ACK; that ACK takes the server's SYN_RECV -> ESTABLISHED. If both ends send a SYN
(simultaneous open) each goes SYN_SENT -> SYN_RECV -> ESTABLISHED. Closing (3.6): the first
side to send FIN (``close()`` or ``shutdown(SHUT_WR)``) goes FIN_WAIT1 -> FIN_WAIT2 ->
TIME_WAIT, the other CLOSE_WAIT -> LAST_ACK -> CLOSE; if both FINs cross, both pass through
CLOSING (simultaneous close); a FIN that also acknowledges ours takes FIN_WAIT1 straight to
TIME_WAIT. After ``shutdown(SHUT_WR)`` (3.6.1, half-close) the application may still receive,
and its later ``close()`` sends nothing more. Resets (3.5.2, 3.5.3): a RST ends any
synchronized connection; a segment for a port with no socket is answered with RST.

Event meanings
--------------
``RCV_ACK`` is the acknowledgment of our SYN or FIN (plain data ACKs do not change state and
are not events here). ``RCV_FIN_ACK`` is a FIN whose acknowledgment field is the first to
cover our own FIN; it only exists while our FIN is unacknowledged (FIN_WAIT1, CLOSING). In
FIN_WAIT2 the peer's FIN is ``RCV_FIN``. ``RCV_SYN_ACK`` in SYN_RECV is the peer's SYN+ACK of
a simultaneous open. Only acceptable segments are events: checking sequence numbers and
windows is the kernel's job, not this model's.

Where the table is not the RFC, and where Linux differs
-------------------------------------------------------
- Linux does not create a socket in SYN_RECV for a passive open: it keeps a small *request
  socket* (``NEW_SYN_RECV``, shown as SYN-RECV by ``ss``) hanging off the listener until the
  handshake completes. The table models the RFC's view (LISTEN + SYN -> SYN_RECV), so
  ``NEW_SYN_RECV`` has no transitions. A RST in SYN_RECV returns to LISTEN (the RFC's passive
  case, the "old duplicate SYN" lesson); after a simultaneous open a real kernel goes to
  CLOSE instead, which a table keyed on the state alone cannot tell apart.
- TIME_WAIT lasts a fixed 60 s on Linux (``TCP_TIMEWAIT_LEN``, :data:`TIME_WAIT_SECONDS`); it
  is not computed as 2*MSL and ``tcp_fin_timeout`` does not change it. ``TIMEOUT_2MSL`` keeps
  the RFC's name for that timer. A retransmitted FIN in TIME_WAIT is acknowledged again and
  restarts the timer (the lost-last-ACK lesson). A RST ends TIME_WAIT (Linux's default,
  ``tcp_rfc1337=0``). A new SYN arriving in TIME_WAIT may be handed to a listener (RFC 6191);
  that depends on sequence numbers or timestamps and on a listener existing, so it is left out.
- Once the application has closed a socket in FIN_WAIT2 (an orphan), Linux bounds the wait
  for the peer's FIN with ``tcp_fin_timeout`` (default 60 s); the RFC waits forever. That
  timer is not an event here.
- ``close()`` after the FIN has already gone out (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK,
  TIME_WAIT) is accepted and sends nothing: on Linux it only releases the descriptor (the
  TIME_WAIT is held by a separate kernel mini-socket). RFC 9293 3.10.4 calls some of these an
  error. ``close()`` in CLOSE (after a reset) likewise only releases the descriptor.
- ``ABORT`` is ``close()`` with SO_LINGER {on, 0}. Like the RFC (3.10.5) it sends RST only
  from SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2 and CLOSE_WAIT; Linux sets ACK on that RST.
  It cannot end a TIME_WAIT on Linux (only an incoming RST or ``ss -K`` can), so it is illegal
  there.
- Linux refuses ``connect()`` on a listening socket (the RFC allows SEND in LISTEN), so
  ACTIVE_OPEN from LISTEN is illegal.
- When simultaneous-open SYN_RECV receives the peer's SYN+ACK the RFC sends nothing more;
  Linux may also acknowledge the duplicate SYN with a bare ACK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final, NamedTuple

from handshake_lab.tcp.segments import Flags
from handshake_lab.tcp.states import TcpState

TIME_WAIT_SECONDS: Final = 60.0
"""Linux's TIME_WAIT duration (``TCP_TIMEWAIT_LEN``), fixed, not derived from an MSL."""


class Event(Enum):
    """An input to the state machine: an application call, an arriving segment, or a timer."""

    # Application calls (RFC 9293 3.10.1-3.10.5).
    PASSIVE_OPEN = "passive_open"
    ACTIVE_OPEN = "active_open"
    CLOSE = "close"
    SEND_EOF = "send_eof"
    ABORT = "abort"
    # Segments received (3.10.7).
    RCV_SYN = "rcv_syn"
    RCV_SYN_ACK = "rcv_syn_ack"
    RCV_ACK = "rcv_ack"
    RCV_FIN = "rcv_fin"
    RCV_FIN_ACK = "rcv_fin_ack"
    RCV_RST = "rcv_rst"
    # Timers (3.10.8).
    TIMEOUT_2MSL = "timeout_2msl"

    @property
    def is_app_call(self) -> bool:
        return self in _APP_CALLS

    @property
    def is_segment(self) -> bool:
        return self.name.startswith("RCV_")


_APP_CALLS: Final = frozenset(
    {Event.PASSIVE_OPEN, Event.ACTIVE_OPEN, Event.CLOSE, Event.SEND_EOF, Event.ABORT}
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge of the state machine.

    ``sends`` lists the flags of each segment this endpoint sends in response, in order
    (empty: nothing is sent). ``key`` names the explanation in the text layer; ``rfc`` is
    the RFC 9293 section that specifies the behaviour.
    """

    next_state: TcpState
    sends: tuple[Flags, ...]
    key: str
    rfc: str

    @property
    def sends_text(self) -> str:
        """The sent segments as text, e.g. ``"SYN+ACK"``; empty when nothing is sent."""
        return ", ".join(flags.text("+") for flags in self.sends)


class IllegalTransition(ValueError):
    """``event`` has no meaning in ``state``; nothing changed."""

    def __init__(self, state: TcpState, event: Event) -> None:
        self.state = state
        self.event = event
        legal = ", ".join(e.name for e, _ in transitions_from(state)) or "none"
        super().__init__(f"{event.name} is not legal in {state.name} (legal there: {legal})")


_S = TcpState
_E = Event
_NOTHING: Final[tuple[Flags, ...]] = ()
_SYN: Final = (Flags.SYN,)
_SYN_ACK: Final = (Flags.SYN | Flags.ACK,)
_ACK: Final = (Flags.ACK,)
_FIN_ACK: Final = (Flags.FIN | Flags.ACK,)
_RST: Final = (Flags.RST,)
_RST_ACK: Final = (Flags.RST | Flags.ACK,)

# THE table. Every other view of the machine (step, transitions_from, the descriptions, the
# tests of the state x event product) is derived from or checked against this literal.
_TABLE: Final[dict[tuple[TcpState, Event], Transition]] = {
    # CLOSE: no connection. Opening calls, and RST for segments aimed at a port with no socket.
    (_S.CLOSE, _E.PASSIVE_OPEN): Transition(_S.LISTEN, _NOTHING, "open.passive", "3.10.1"),
    (_S.CLOSE, _E.ACTIVE_OPEN): Transition(_S.SYN_SENT, _SYN, "open.active", "3.10.1"),
    (_S.CLOSE, _E.CLOSE): Transition(_S.CLOSE, _NOTHING, "close.release", "3.10.4"),
    (_S.CLOSE, _E.RCV_SYN): Transition(_S.CLOSE, _RST_ACK, "reset.port_closed", "3.10.7.1"),
    (_S.CLOSE, _E.RCV_SYN_ACK): Transition(_S.CLOSE, _RST, "reset.stray_syn_ack", "3.10.7.1"),
    # LISTEN: the RFC's passive TCB; on Linux the listener spawns request sockets.
    (_S.LISTEN, _E.CLOSE): Transition(_S.CLOSE, _NOTHING, "close.listener", "3.10.4"),
    (_S.LISTEN, _E.ABORT): Transition(_S.CLOSE, _NOTHING, "close.listener", "3.10.5"),
    (_S.LISTEN, _E.RCV_SYN): Transition(
        _S.SYN_RECV, _SYN_ACK, "handshake.syn_received", "3.10.7.2"
    ),
    (_S.LISTEN, _E.RCV_ACK): Transition(_S.LISTEN, _RST, "reset.stray_ack", "3.10.7.2"),
    # SYN_SENT: our SYN is out.
    (_S.SYN_SENT, _E.CLOSE): Transition(_S.CLOSE, _NOTHING, "close.before_connected", "3.10.4"),
    (_S.SYN_SENT, _E.ABORT): Transition(_S.CLOSE, _NOTHING, "close.before_connected", "3.10.5"),
    (_S.SYN_SENT, _E.RCV_SYN_ACK): Transition(
        _S.ESTABLISHED, _ACK, "handshake.syn_ack_received", "3.10.7.3"
    ),
    (_S.SYN_SENT, _E.RCV_SYN): Transition(
        _S.SYN_RECV, _SYN_ACK, "handshake.simultaneous_open", "3.10.7.3"
    ),
    (_S.SYN_SENT, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.refused", "3.10.7.3"),
    # SYN_RECV: we answered a SYN and wait for the ACK of our SYN.
    (_S.SYN_RECV, _E.CLOSE): Transition(_S.FIN_WAIT1, _FIN_ACK, "close.active", "3.10.4"),
    (_S.SYN_RECV, _E.SEND_EOF): Transition(_S.FIN_WAIT1, _FIN_ACK, "close.half_close", "3.6.1"),
    (_S.SYN_RECV, _E.ABORT): Transition(_S.CLOSE, _RST_ACK, "abort.reset", "3.10.5"),
    (_S.SYN_RECV, _E.RCV_SYN): Transition(
        _S.SYN_RECV, _SYN_ACK, "handshake.duplicate_syn", "3.10.7.4"
    ),
    (_S.SYN_RECV, _E.RCV_ACK): Transition(
        _S.ESTABLISHED, _NOTHING, "handshake.ack_received", "3.10.7.4"
    ),
    (_S.SYN_RECV, _E.RCV_SYN_ACK): Transition(
        _S.ESTABLISHED, _NOTHING, "handshake.simultaneous_syn_ack", "3.5"
    ),
    (_S.SYN_RECV, _E.RCV_FIN): Transition(
        _S.CLOSE_WAIT, _ACK, "close.fin_during_handshake", "3.10.7.4"
    ),
    (_S.SYN_RECV, _E.RCV_RST): Transition(_S.LISTEN, _NOTHING, "reset.request_dropped", "3.5.3"),
    # ESTABLISHED: data flows both ways.
    (_S.ESTABLISHED, _E.CLOSE): Transition(_S.FIN_WAIT1, _FIN_ACK, "close.active", "3.6"),
    (_S.ESTABLISHED, _E.SEND_EOF): Transition(_S.FIN_WAIT1, _FIN_ACK, "close.half_close", "3.6.1"),
    (_S.ESTABLISHED, _E.ABORT): Transition(_S.CLOSE, _RST_ACK, "abort.reset", "3.10.5"),
    (_S.ESTABLISHED, _E.RCV_FIN): Transition(
        _S.CLOSE_WAIT, _ACK, "close.fin_received", "3.10.7.4"
    ),
    (_S.ESTABLISHED, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.received", "3.5.3"),
    # FIN_WAIT1: our FIN is out and not yet acknowledged.
    (_S.FIN_WAIT1, _E.CLOSE): Transition(_S.FIN_WAIT1, _NOTHING, "close.after_fin", "3.10.4"),
    (_S.FIN_WAIT1, _E.ABORT): Transition(_S.CLOSE, _RST_ACK, "abort.reset", "3.10.5"),
    (_S.FIN_WAIT1, _E.RCV_ACK): Transition(_S.FIN_WAIT2, _NOTHING, "close.fin_acked", "3.6"),
    (_S.FIN_WAIT1, _E.RCV_FIN): Transition(_S.CLOSING, _ACK, "close.simultaneous", "3.10.7.4"),
    (_S.FIN_WAIT1, _E.RCV_FIN_ACK): Transition(
        _S.TIME_WAIT, _ACK, "close.fin_with_ack", "3.10.7.4"
    ),
    (_S.FIN_WAIT1, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.received", "3.5.3"),
    # FIN_WAIT2: our FIN is acknowledged; the peer may still send data, then its FIN.
    (_S.FIN_WAIT2, _E.CLOSE): Transition(_S.FIN_WAIT2, _NOTHING, "close.after_fin", "3.10.4"),
    (_S.FIN_WAIT2, _E.ABORT): Transition(_S.CLOSE, _RST_ACK, "abort.reset", "3.10.5"),
    (_S.FIN_WAIT2, _E.RCV_FIN): Transition(
        _S.TIME_WAIT, _ACK, "close.peer_fin_received", "3.10.7.4"
    ),
    (_S.FIN_WAIT2, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.received", "3.5.3"),
    # CLOSING: both FINs crossed; waiting for the ACK of ours.
    (_S.CLOSING, _E.CLOSE): Transition(_S.CLOSING, _NOTHING, "close.after_fin", "3.10.4"),
    (_S.CLOSING, _E.ABORT): Transition(_S.CLOSE, _NOTHING, "abort.quiet", "3.10.5"),
    (_S.CLOSING, _E.RCV_ACK): Transition(
        _S.TIME_WAIT, _NOTHING, "close.closing_acked", "3.10.7.4"
    ),
    (_S.CLOSING, _E.RCV_FIN): Transition(_S.CLOSING, _ACK, "close.duplicate_fin", "3.10.7.4"),
    (_S.CLOSING, _E.RCV_FIN_ACK): Transition(
        _S.TIME_WAIT, _ACK, "close.closing_acked", "3.10.7.4"
    ),
    (_S.CLOSING, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.received", "3.5.3"),
    # TIME_WAIT: the kernel holds the 4-tuple; the application has no say any more.
    (_S.TIME_WAIT, _E.CLOSE): Transition(_S.TIME_WAIT, _NOTHING, "close.after_fin", "3.10.4"),
    (_S.TIME_WAIT, _E.RCV_FIN): Transition(_S.TIME_WAIT, _ACK, "time_wait.reack", "3.10.7.4"),
    (_S.TIME_WAIT, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "time_wait.reset", "3.5.3"),
    (_S.TIME_WAIT, _E.TIMEOUT_2MSL): Transition(_S.CLOSE, _NOTHING, "time_wait.expired", "3.10.8"),
    # CLOSE_WAIT: the peer sent FIN; we may still send until we close.
    (_S.CLOSE_WAIT, _E.CLOSE): Transition(_S.LAST_ACK, _FIN_ACK, "close.passive", "3.6"),
    (_S.CLOSE_WAIT, _E.SEND_EOF): Transition(_S.LAST_ACK, _FIN_ACK, "close.passive", "3.6.1"),
    (_S.CLOSE_WAIT, _E.ABORT): Transition(_S.CLOSE, _RST_ACK, "abort.reset", "3.10.5"),
    (_S.CLOSE_WAIT, _E.RCV_FIN): Transition(
        _S.CLOSE_WAIT, _ACK, "close.duplicate_fin", "3.10.7.4"
    ),
    (_S.CLOSE_WAIT, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.received", "3.5.3"),
    # LAST_ACK: both FINs sent; waiting for the ACK of ours, then the connection is gone.
    (_S.LAST_ACK, _E.CLOSE): Transition(_S.LAST_ACK, _NOTHING, "close.after_fin", "3.10.4"),
    (_S.LAST_ACK, _E.ABORT): Transition(_S.CLOSE, _NOTHING, "abort.quiet", "3.10.5"),
    (_S.LAST_ACK, _E.RCV_ACK): Transition(_S.CLOSE, _NOTHING, "close.last_ack_acked", "3.6"),
    (_S.LAST_ACK, _E.RCV_FIN): Transition(_S.LAST_ACK, _ACK, "close.duplicate_fin", "3.10.7.4"),
    (_S.LAST_ACK, _E.RCV_RST): Transition(_S.CLOSE, _NOTHING, "reset.received", "3.5.3"),
}

TRANSITIONS: Final[Mapping[tuple[TcpState, Event], Transition]] = MappingProxyType(_TABLE)
"""Read-only view of the transition table."""

EXPLANATION_KEYS: Final[frozenset[str]] = frozenset(t.key for t in _TABLE.values())
"""Every explanation key the table uses: the text layer must have each in every language."""


def step(state: TcpState, event: Event) -> Transition:
    """The transition ``event`` causes in ``state``; raise :class:`IllegalTransition`."""
    try:
        return _TABLE[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def transitions_from(state: TcpState) -> list[tuple[Event, Transition]]:
    """The legal events in ``state`` with their transitions, in :class:`Event` order."""
    return [(event, _TABLE[(state, event)]) for event in Event if (state, event) in _TABLE]


class HistoryEntry(NamedTuple):
    before: TcpState
    event: Event
    transition: Transition


class Connection:
    """One endpoint's state, advanced by :meth:`handle`; illegal events change nothing."""

    def __init__(self, state: TcpState = TcpState.CLOSE) -> None:
        self._state = state
        self._history: list[HistoryEntry] = []

    @property
    def state(self) -> TcpState:
        return self._state

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """Every transition taken so far, oldest first (illegal events are not recorded)."""
        return tuple(self._history)

    def handle(self, event: Event) -> Transition:
        """Apply ``event``; on :class:`IllegalTransition` state and history are unchanged."""
        transition = step(self._state, event)
        self._history.append(HistoryEntry(self._state, event, transition))
        self._state = transition.next_state
        return transition

    def __repr__(self) -> str:
        return f"Connection(state={self._state.name}, steps={len(self._history)})"


# States in the order a connection meets them, for listings meant to be read top to bottom.
LIFECYCLE_ORDER: Final[tuple[TcpState, ...]] = (
    _S.CLOSE,
    _S.LISTEN,
    _S.SYN_SENT,
    _S.SYN_RECV,
    _S.NEW_SYN_RECV,
    _S.ESTABLISHED,
    _S.FIN_WAIT1,
    _S.FIN_WAIT2,
    _S.CLOSING,
    _S.TIME_WAIT,
    _S.CLOSE_WAIT,
    _S.LAST_ACK,
)


@dataclass(frozen=True, slots=True)
class TextbookPath:
    """A named walk through the machine for ONE endpoint: the start state, then each event
    with the state the textbook says it leads to."""

    start: TcpState
    steps: tuple[tuple[Event, TcpState], ...]

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(event for event, _ in self.steps)

    @property
    def states(self) -> tuple[TcpState, ...]:
        """Visited states, the start included."""
        return (self.start, *(state for _, state in self.steps))


def walk(start: TcpState, events: Iterable[Event]) -> list[Transition]:
    """The transitions ``events`` take from ``start``; raise on the first illegal one."""
    connection = Connection(start)
    return [connection.handle(event) for event in events]


def _path(start: TcpState, *steps: tuple[Event, TcpState]) -> TextbookPath:
    return TextbookPath(start, tuple(steps))


# Expected states are written out by hand (not computed from the table) so that the tests
# comparing them with walk() catch a table edit that breaks a lesson.
paths: Final[Mapping[str, TextbookPath]] = MappingProxyType(
    {
        "handshake_client": _path(
            _S.CLOSE,
            (_E.ACTIVE_OPEN, _S.SYN_SENT),
            (_E.RCV_SYN_ACK, _S.ESTABLISHED),
        ),
        "handshake_server": _path(
            _S.CLOSE,
            (_E.PASSIVE_OPEN, _S.LISTEN),
            (_E.RCV_SYN, _S.SYN_RECV),
            (_E.RCV_ACK, _S.ESTABLISHED),
        ),
        "simultaneous_open": _path(
            _S.CLOSE,
            (_E.ACTIVE_OPEN, _S.SYN_SENT),
            (_E.RCV_SYN, _S.SYN_RECV),
            (_E.RCV_SYN_ACK, _S.ESTABLISHED),
        ),
        "active_close": _path(
            _S.ESTABLISHED,
            (_E.CLOSE, _S.FIN_WAIT1),
            (_E.RCV_ACK, _S.FIN_WAIT2),
            (_E.RCV_FIN, _S.TIME_WAIT),
            (_E.TIMEOUT_2MSL, _S.CLOSE),
        ),
        "active_close_fin_with_ack": _path(
            _S.ESTABLISHED,
            (_E.CLOSE, _S.FIN_WAIT1),
            (_E.RCV_FIN_ACK, _S.TIME_WAIT),
            (_E.TIMEOUT_2MSL, _S.CLOSE),
        ),
        "passive_close": _path(
            _S.ESTABLISHED,
            (_E.RCV_FIN, _S.CLOSE_WAIT),
            (_E.CLOSE, _S.LAST_ACK),
            (_E.RCV_ACK, _S.CLOSE),
        ),
        "simultaneous_close": _path(
            _S.ESTABLISHED,
            (_E.CLOSE, _S.FIN_WAIT1),
            (_E.RCV_FIN, _S.CLOSING),
            (_E.RCV_ACK, _S.TIME_WAIT),
            (_E.TIMEOUT_2MSL, _S.CLOSE),
        ),
        "half_close": _path(
            _S.ESTABLISHED,
            (_E.SEND_EOF, _S.FIN_WAIT1),
            (_E.RCV_ACK, _S.FIN_WAIT2),
            (_E.RCV_FIN, _S.TIME_WAIT),
            (_E.CLOSE, _S.TIME_WAIT),
            (_E.TIMEOUT_2MSL, _S.CLOSE),
        ),
        "half_close_peer": _path(
            _S.ESTABLISHED,
            (_E.RCV_FIN, _S.CLOSE_WAIT),
            (_E.SEND_EOF, _S.LAST_ACK),
            (_E.RCV_ACK, _S.CLOSE),
            (_E.CLOSE, _S.CLOSE),
        ),
        "lost_last_ack": _path(
            _S.ESTABLISHED,
            (_E.CLOSE, _S.FIN_WAIT1),
            (_E.RCV_ACK, _S.FIN_WAIT2),
            (_E.RCV_FIN, _S.TIME_WAIT),
            (_E.RCV_FIN, _S.TIME_WAIT),
            (_E.TIMEOUT_2MSL, _S.CLOSE),
        ),
        "reset": _path(
            _S.ESTABLISHED,
            (_E.RCV_RST, _S.CLOSE),
        ),
        "abort": _path(
            _S.ESTABLISHED,
            (_E.ABORT, _S.CLOSE),
        ),
        "connection_refused": _path(
            _S.CLOSE,
            (_E.ACTIVE_OPEN, _S.SYN_SENT),
            (_E.RCV_RST, _S.CLOSE),
        ),
        "old_duplicate_syn": _path(
            _S.LISTEN,
            (_E.RCV_SYN, _S.SYN_RECV),
            (_E.RCV_RST, _S.LISTEN),
        ),
    }
)


def path_transitions(name: str) -> list[Transition]:
    """The transitions of the named textbook path (KeyError for an unknown name)."""
    path = paths[name]
    return walk(path.start, path.events)


__all__ = [
    "EXPLANATION_KEYS",
    "LIFECYCLE_ORDER",
    "TIME_WAIT_SECONDS",
    "TRANSITIONS",
    "Connection",
    "Event",
    "HistoryEntry",
    "IllegalTransition",
    "TextbookPath",
    "Transition",
    "path_transitions",
    "paths",
    "step",
    "transitions_from",
    "walk",
]
