"""What the RFC machine predicts from one action: a two-end simulation over ``tcp.machine``.

``play`` shows, next to what the kernel reported after each action, what the one transition
table (``tcp.machine.TRANSITIONS``) says should happen: the action is an event at one end; every
segment its transition sends is delivered to the peer as the matching event, the peer's answers
are delivered back, and so on until nothing is left in flight. A segment a hold drops is not
delivered (a hold is what the session installed in nftables, with what is left of its count).

This is a model, labelled as one wherever it is shown; it never replaces what the kernel said.
It starts each action from the states the kernel showed after the previous one, so one wrong
guess does not poison the rest of a session. It has no clock: where a retransmission timer will
deliver something later (an end waits for the ACK of its SYN or FIN and nothing keeps that
segment dropped), the prediction says it cannot tell and the step only observes.

Ends: ``client``; ``server``, the server's end of the client's connection (created from the
listener when the SYN arrives); ``listener``. A state of ``CLOSE`` means no socket: the kernel
table shows that as ABSENT.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from handshake_lab.tcp.machine import Event, IllegalTransition, step
from handshake_lab.tcp.segments import Flags
from handshake_lab.tcp.states import TcpState
from handshake_lab.topo.nft import hold_matches

ENDS: tuple[str, ...] = ("listener", "client", "server")
"""The ends a play session has, in display order (the lab's sides of the same names)."""

APP_EVENTS: Mapping[str, Event] = {
    "connect": Event.ACTIVE_OPEN,
    "close": Event.CLOSE,
    "send_eof": Event.SEND_EOF,
    "abort": Event.ABORT,
    "listen": Event.PASSIVE_OPEN,
    "unlisten": Event.CLOSE,
}
"""The lab actions that are application calls of the machine (``send``, ``recv``, ``accept``
and ``observe`` are not: data and reads change no state by themselves)."""

PEER_HAS_OUR_FIN = frozenset(
    {TcpState.CLOSE_WAIT, TcpState.LAST_ACK, TcpState.CLOSING, TcpState.TIME_WAIT}
)
"""States in which an end has received its peer's FIN: what it sends acknowledges that FIN."""

WAITING_FOR_ACK: Mapping[TcpState, Flags] = {
    TcpState.SYN_SENT: Flags.SYN,
    TcpState.SYN_RECV: Flags.SYN | Flags.ACK,
    TcpState.FIN_WAIT1: Flags.FIN | Flags.ACK,
    TcpState.CLOSING: Flags.FIN | Flags.ACK,
    TcpState.LAST_ACK: Flags.FIN | Flags.ACK,
}
"""States with a segment not yet acknowledged: a retransmission timer runs and resends it."""

SENDS_DATA = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT})
"""States in which ``send`` puts data on the wire (elsewhere the kernel refuses it)."""


@dataclass(frozen=True, slots=True)
class ModelHold:
    """A hold as the model sees it: drops ``kind`` arriving at ``at`` (``client`` or
    ``server``: whose namespace), ``left`` more times (None: until released)."""

    id: str
    kind: str
    at: str
    left: int | None = None

    def blocks(self, flags: Flags, length: int) -> bool:
        return (self.left is None or self.left > 0) and hold_matches(
            self.kind, flags.text(","), length
        )


@dataclass(frozen=True, slots=True)
class Move:
    """One transition the model took: ``end`` went ``before`` -> ``after`` on ``event``."""

    end: str
    before: TcpState
    event: Event
    after: TcpState
    key: str
    sends: str

    def text(self) -> str:
        sent = f", sends {self.sends}" if self.sends else ""
        return f"{self.end} {self.before.name} -> {self.after.name} ({self.event.name}{sent})"


@dataclass(frozen=True, slots=True)
class Drop:
    hold: str
    src: str
    dst: str
    flags: str

    def text(self) -> str:
        return f"{self.flags} {self.src} -> {self.dst}"


@dataclass(frozen=True, slots=True)
class Illegal:
    end: str
    state: TcpState
    event: Event


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's answer for one action: each end's state after it, and how it got there."""

    before: Mapping[str, TcpState]
    after: Mapping[str, TcpState]
    moves: tuple[Move, ...] = ()
    drops: tuple[Drop, ...] = ()
    illegal: tuple[Illegal, ...] = ()
    unknown: tuple[str, str] | None = None
    """(end, segment) whose retransmission timer makes the outcome a matter of time."""
    left: Mapping[str, int | None] = field(default_factory=dict)
    """What each hold has left to drop afterwards, as far as the model knows."""

    @property
    def known(self) -> bool:
        return self.unknown is None

    def expect(self) -> dict[str, TcpState | None]:
        """The prediction as a lab step's ``expect``: CLOSE (no socket) is ABSENT (None)."""
        if not self.known:
            return {}
        return {end: (None if s is TcpState.CLOSE else s) for end, s in self.after.items()}


def peer(end: str) -> str:
    return "server" if end == "client" else "client"


def namespace_of(end: str) -> str:
    """Whose namespace (and nftables) an end lives in: the listener is the server's."""
    return "client" if end == "client" else "server"


def from_kernel(state: str | None) -> TcpState:
    """A state the kernel showed (a Linux name, ``ABSENT`` or None) as the model's state."""
    if state is None or state == "ABSENT":
        return TcpState.CLOSE
    kernel = TcpState[state]
    return TcpState.SYN_RECV if kernel is TcpState.NEW_SYN_RECV else kernel


Segment = tuple[str, str, Flags, int, bool]
"""(src, dst, flags, payload length, acknowledges dst's FIN) of a segment on its way."""


class _Wire:
    """The two ends and the segments between them, run until nothing is in flight."""

    def __init__(
        self,
        states: Mapping[str, TcpState],
        holds: Sequence[ModelHold],
        left: Mapping[str, int | None],
    ) -> None:
        self.now = {end: states.get(end, TcpState.CLOSE) for end in ENDS}
        self.holds = holds
        self.left = dict(left)
        self.moves: list[Move] = []
        self.drops: list[Drop] = []
        self.illegal: list[Illegal] = []
        self.in_flight: deque[Segment] = deque()

    def send(self, src: str, flags: Flags, length: int = 0) -> None:
        if src != "listener":
            dst = peer(src)
            self.in_flight.append((src, dst, flags, length, self.now[src] in PEER_HAS_OUR_FIN))

    def apply(self, end: str, event: Event) -> None:
        state = self.now[end]
        listening = self.now["listener"] is TcpState.LISTEN
        if end == "server" and state is TcpState.CLOSE and event is Event.RCV_SYN and listening:
            # No connection yet: the SYN meets the listener, which makes the server's end.
            state = TcpState.LISTEN
        try:
            transition = step(state, event)
        except IllegalTransition:
            self.illegal.append(Illegal(end, state, event))
            return
        self.now[end] = transition.next_state
        self.moves.append(
            Move(end, state, event, transition.next_state, transition.key, transition.sends_text)
        )
        for flags in transition.sends:
            self.send(end, flags)

    def _held(self, dst: str, flags: Flags, length: int) -> ModelHold | None:
        for hold in self.holds:
            left = self.left.get(hold.id)
            if hold.at != namespace_of(dst) or left == 0:
                continue
            if hold_matches(hold.kind, flags.text(","), length):
                return hold
        return None

    def run(self) -> None:
        for _ in range(64):  # every exchange of the table ends in a few segments
            if not self.in_flight:
                return
            src, dst, flags, length, acks_fin = self.in_flight.popleft()
            hold = self._held(dst, flags, length)
            if hold is not None:
                left = self.left.get(hold.id)
                if left is not None:
                    self.left[hold.id] = left - 1
                self.drops.append(Drop(hold.id, src, dst, flags.text("+")))
                continue
            received = _event_of(flags, self.now[dst], acks_fin)
            if received is None:
                if length and self.now[dst] in SENDS_DATA | {
                    TcpState.FIN_WAIT1,
                    TcpState.FIN_WAIT2,
                }:
                    self.send(dst, Flags.ACK)  # data is acknowledged
                continue
            if self.now[dst] is TcpState.CLOSE and received not in (
                Event.RCV_SYN,
                Event.RCV_SYN_ACK,
            ):
                continue  # no socket there: the kernel's RST for it is not in the table
            self.apply(dst, received)


def _pending_timer(
    states: Mapping[str, TcpState], holds: Sequence[ModelHold], left: Mapping[str, int | None]
) -> tuple[str, str] | None:
    """The first end whose retransmission timer, when it fires, changes some end's state:
    its unacknowledged SYN or FIN resent through the holds as they are now. None if no timer
    can change anything (none runs, or whatever it resends, or the answer, stays dropped)."""
    for end in ("client", "server"):
        flags = WAITING_FOR_ACK.get(states.get(end, TcpState.CLOSE))
        if flags is None:
            continue
        # A counted hold may drop a few resends, but a later one gets through: as if spent.
        wire = _Wire(states, holds, {h: (0 if n is not None else None) for h, n in left.items()})
        wire.send(end, flags)
        wire.run()
        if any(m.before is not m.after for m in wire.moves):
            return end, flags.text("+")
    return None


def predict(
    states: Mapping[str, TcpState],
    action: str,
    actor: str,
    holds: Sequence[ModelHold] = (),
    *,
    released: bool = False,
) -> Prediction:
    """The model's prediction for ``actor`` doing ``action`` from ``states`` (every end of
    ``ENDS``), with ``holds`` in force. ``released``: the step removed a hold, so a segment it
    kept back is now up to a timer.
    """
    left = {h.id: h.left for h in holds}
    wire = _Wire(states, holds, left)
    before = dict(wire.now)
    # Before the action: a timer that could fire at any moment makes the result a guess.
    pending = _pending_timer(before, holds, left)
    if pending is not None:
        return Prediction(before, before, unknown=pending, left=left)
    event = APP_EVENTS.get(action)
    if event is not None:
        wire.apply(actor, event)
    elif action == "send" and wire.now[actor] in SENDS_DATA:
        wire.send(actor, Flags.PSH | Flags.ACK, 1)
    wire.run()
    after = dict(wire.now)
    if released:
        pending = _pending_timer(after, holds, wire.left)
    return Prediction(
        before,
        after,
        tuple(wire.moves),
        tuple(wire.drops),
        tuple(wire.illegal),
        pending,
        wire.left,
    )


def _event_of(flags: Flags, state: TcpState, acks_fin: bool) -> Event | None:
    """The machine's event for a segment arriving in ``state`` (None: no state effect).

    ``acks_fin``: the sender had our FIN when it sent this, so its ACK field covers it.
    """
    if Flags.RST in flags:
        return None if state is TcpState.CLOSE else Event.RCV_RST
    if Flags.SYN in flags:
        return Event.RCV_SYN_ACK if Flags.ACK in flags else Event.RCV_SYN
    if Flags.FIN in flags:
        ours_out = state in (TcpState.FIN_WAIT1, TcpState.CLOSING)
        return Event.RCV_FIN_ACK if ours_out and acks_fin else Event.RCV_FIN
    if Flags.ACK in flags:
        if state is TcpState.SYN_RECV:
            return Event.RCV_ACK  # the third segment, or data that completes the handshake
        if acks_fin and state in (TcpState.FIN_WAIT1, TcpState.CLOSING, TcpState.LAST_ACK):
            return Event.RCV_ACK
    return None
