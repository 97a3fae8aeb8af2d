"""``handshake-lab play``: drive one real connection by hand, one command at a time.

Each command the user types is parsed (``parse_command``, pure) into a lab ``Step`` and handed
to the same engine that runs labs (``LabRun.run_step``), so a play step shows exactly what a
lab step shows: ss and psutil by 4-tuple, the segments, the transitions, the holds and their
counters, in the table, in ``--json`` and in ``--save``. What play adds is the model: before the
step, ``lab.predict`` says what the RFC machine expects each end to become, and that prediction
is the step's ``expect`` (so the runner's bounded wait waits for it, briefly). The kernel's
answer is an observation; a disagreement is shown, never treated as a failure of the session.

``save FILE.toml`` writes the session so far as a lab: the commands as steps, the states the
kernel showed (where ss and psutil agreed) as each step's ``expect``, the built-in text of a
state where an end changed, and a placeholder for the teacher elsewhere. ``run`` of that file on
the same topology repeats the session and agrees at every step.

There is no undo: the kernel has none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from handshake_lab.errors import OutputError
from handshake_lab.i18n.play import play_text, play_texts
from handshake_lab.i18n.states import state_text
from handshake_lab.lab.predict import (
    ENDS,
    SENDS_DATA,
    ModelHold,
    Prediction,
    from_kernel,
    predict,
)
from handshake_lab.lab.runner import UNEXPECTED_ERROR, Emit, LabRun, StepStarted
from handshake_lab.lab.session import RunRequest, drive
from handshake_lab.net.waits import wait_for
from handshake_lab.outputs import check_output, write_output
from handshake_lab.placement import Topology
from handshake_lab.record.events import Event, StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.spec.model import (
    ABSENT,
    HOLD_KINDS,
    MAX_TIMEOUT,
    Hold,
    Lab,
    Step,
    Text,
)
from handshake_lab.tcp.machine import TRANSITIONS
from handshake_lab.tcp.machine import Event as MachineEvent
from handshake_lab.tcp.segments import Flags
from handshake_lab.tcp.states import TcpState
from handshake_lab.topo.netem import Link

STEP_TIMEOUT = 1.0
"""Seconds a play step waits for the predicted states (and a ``recv`` for input)."""
SAVED_TIMEOUT = 2.0
"""A saved step's timeout: the kernel reached these states in the session; room to do it again."""
MAX_WAIT = 60.0
DEFAULT_IDLE = 600.0

COMMANDS: tuple[str, ...] = (
    "connect",
    "send",
    "recv",
    "shutdown",
    "close",
    "abort",
    "listen",
    "unlisten",
    "accept",
    "wait",
    "drop",
    "hold",
    "release",
    "help",
    "history",
    "save",
    "quit",
)
CONN_ENDS: tuple[str, ...] = ("client", "server")
DROP_KINDS: Mapping[str, tuple[str, str]] = {
    "fin": ("drop_fin", "any"),
    "ack": ("drop_pure_ack", "any"),
    "synack": ("drop_synack", "server"),
    "syn": ("drop_syn", "client"),
}
"""``drop next WHAT from END``: the hold kind, and which end sends such a segment."""
LISTENER_ACTIONS = frozenset({"listen", "unlisten", "accept"})
"""Actions whose end (in the model) is the listener, though the lab's actor is the server."""
HOLD_COMMANDS = frozenset({"drop", "hold", "release"})


def hold_kinds_listing(width: int = 76) -> str:
    """The hold kinds for ``help``, in lines under its two-space indent that fit ``width``."""
    lines: list[str] = []
    for kind in HOLD_KINDS:
        if lines and len(lines[-1]) + 1 + len(kind) <= width - 2:
            lines[-1] += f" {kind}"
        else:
            lines.append(kind)
    return "\n  ".join(lines)


class PlayError(ValueError):
    """A command line that is not a command: one line, the session goes on."""


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command line. ``action`` is set for the commands that become a step."""

    verb: str
    line: str
    actor: str = "lab"
    action: str | None = None
    args: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    hold: tuple[str, str, int | None] | None = None  # (kind, at, count)
    release: str | None = None
    wait: float = 0.0
    path: str | None = None


def _end(verb: str, words: list[str], index: int, allowed: tuple[str, ...]) -> str:
    if len(words) <= index:
        raise PlayError(f"{verb} needs an end: {verb} {'|'.join(allowed)}")
    end = words[index]
    if end not in allowed:
        raise PlayError(f"{verb}: unknown end {end!r}; ends: {', '.join(allowed)}")
    return end


def _no_more(verb: str, words: list[str], count: int, usage: str) -> None:
    if len(words) > count:
        raise PlayError(f"{verb}: unexpected {' '.join(words[count:])!r}; usage: {usage}")


def parse_command(line: str) -> Command | None:
    """The command on ``line``; None for a blank line or a ``#`` comment.

    Raises ``PlayError`` (one line, naming the valid commands or ends) for anything else.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split()
    verb = words[0].lower()
    if verb == "exit":
        verb = "quit"
    if verb not in COMMANDS:
        raise PlayError(f"unknown command {words[0]!r}; commands: {', '.join(COMMANDS)}")
    if verb in {"help", "history", "quit"}:
        _no_more(verb, words, 1, verb)
        return Command(verb, text)
    if verb == "save":
        if len(words) != 2 or not words[1].endswith(".toml"):
            raise PlayError("save needs one file name ending in .toml: save FILE.toml")
        return Command(verb, text, path=words[1])
    if verb == "connect":
        if len(words) > 1:
            _end(verb, words, 1, ("client",))
        _no_more(verb, words, 2, "connect [client]")
        return Command(verb, text, "client", "connect")
    if verb == "send":
        end = _end(verb, words, 1, CONN_ENDS)
        parts = text.split(None, 2)
        if len(parts) < 3:
            raise PlayError("send needs an end and a text: send client|server TEXT")
        return Command(verb, text, end, "send", {"data": parts[2]})
    if verb in {"recv", "abort"}:
        end = _end(verb, words, 1, CONN_ENDS)
        _no_more(verb, words, 2, f"{verb} client|server")
        return Command(verb, text, end, verb)
    if verb == "shutdown":
        end = _end(verb, words, 1, CONN_ENDS)
        how = words[2].lower() if len(words) > 2 else "wr"
        if how == "rd":
            raise PlayError(
                "shutdown END rd (SHUT_RD) is not supported: it sends nothing and changes no "
                "state; shutdown END is SHUT_WR"
            )
        if how != "wr":
            raise PlayError(f"shutdown: unknown direction {how!r}; usage: shutdown client|server")
        _no_more(verb, words, 3, "shutdown client|server")
        return Command(verb, text, end, "send_eof")
    if verb == "close":
        end = _end(verb, words, 1, (*CONN_ENDS, "listener"))
        _no_more(verb, words, 2, "close client|server|listener")
        if end == "listener":
            return Command(verb, text, "server", "unlisten")
        return Command(verb, text, end, "close")
    if verb == "listen":
        if len(words) > 1 and words[1] != "noaccept":
            raise PlayError(f"listen: unknown option {words[1]!r}; usage: listen [noaccept]")
        _no_more(verb, words, 2, "listen [noaccept]")
        args: dict[str, str | int | float | bool] = {"accept": len(words) == 1}
        return Command(verb, text, "server", "listen", args)
    if verb in {"unlisten", "accept"}:
        _no_more(verb, words, 1, verb)
        return Command(verb, text, "server", verb)
    if verb == "wait":
        seconds = 1.0
        if len(words) > 1:
            try:
                seconds = float(words[1])
            except ValueError:
                raise PlayError(f"wait: {words[1]!r} is not a number of seconds") from None
            if not 0 < seconds <= MAX_WAIT:
                raise PlayError(f"wait: between 0 and {MAX_WAIT:g} seconds")
        _no_more(verb, words, 2, "wait [SECONDS]")
        return Command(verb, text, "lab", "observe", wait=seconds)
    if verb == "drop":
        usage = "drop next fin|ack|synack|syn from client|server"
        if len(words) != 5 or words[1] != "next" or words[3] != "from":
            raise PlayError(f"usage: {usage}")
        what = words[2].lower()
        if what not in DROP_KINDS:
            raise PlayError(f"drop next: unknown segment {what!r}; {usage}")
        end = _end(verb, words, 4, CONN_ENDS)
        kind, sender = DROP_KINDS[what]
        if sender not in ("any", end):
            raise PlayError(f"drop next {what}: only the {sender} sends one")
        at = "server" if end == "client" else "client"  # dropped where it arrives
        return Command(verb, text, "lab", "observe", hold=(kind, at, 1))
    if verb == "hold":
        if len(words) != 4 or words[2] != "at":
            raise PlayError(f"usage: hold KIND at client|server; kinds: {', '.join(HOLD_KINDS)}")
        kind = words[1].lower()
        if kind not in HOLD_KINDS:
            raise PlayError(f"hold: unknown kind {kind!r}; kinds: {', '.join(HOLD_KINDS)}")
        end = _end(verb, words, 3, CONN_ENDS)
        return Command(verb, text, "lab", "observe", hold=(kind, end, None))
    # release
    if len(words) != 2:
        raise PlayError("usage: release HOLD (the id play gave it: h1, h2, ...)")
    return Command(verb, text, "lab", "observe", release=words[1])


def completions(text: str, words_before: list[str]) -> list[str]:
    """What tab completion offers for ``text`` after ``words_before`` on the line."""
    if not words_before:
        options: tuple[str, ...] = COMMANDS
    else:
        verb = words_before[0]
        position = len(words_before)
        options = ()
        if verb in {"send", "recv", "shutdown", "abort"} and position == 1:
            options = CONN_ENDS
        elif verb == "close" and position == 1:
            options = (*CONN_ENDS, "listener")
        elif verb == "connect" and position == 1:
            options = ("client",)
        elif verb == "listen" and position == 1:
            options = ("noaccept",)
        elif verb == "drop":
            options = {1: ("next",), 2: tuple(DROP_KINDS), 3: ("from",), 4: CONN_ENDS}.get(
                position, ()
            )
        elif verb == "hold":
            options = {1: HOLD_KINDS, 2: ("at",), 3: CONN_ENDS}.get(position, ())
    return [o for o in options if o.startswith(text)]


# -- the session ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Played:
    """One command that ran as a step: what was asked, predicted and observed."""

    command: Command
    step: Step
    prediction: Prediction
    report: StepReport


Say = Callable[[str], None]
ReadLine = Callable[[], Awaitable[str | None]]
"""The next command line; None at the end of input."""


def play_lab(topology: Topology) -> Lab:
    """The lab a play session runs: one client, the main port, no echo, no fixed steps."""
    return Lab(
        name="play",
        title=Text(**play_texts("play_title")),
        summary=Text(**play_texts("play_summary")),
        clients=("client",),
        ports=("main",),
        echo=False,
        steps=(),
        path=Path("play"),
        topologies=(topology.step_set,),
    )


class PlayModel:
    """The model's side of a session: each end's state and the holds, advanced by commands
    (``plan``) and put right by what the kernel showed (``learn``). Pure: no sockets."""

    def __init__(self) -> None:
        self.states: dict[str, TcpState] = dict.fromkeys(ENDS, TcpState.CLOSE)
        self.holds: dict[str, ModelHold] = {}
        self.counts: dict[str, int | None] = {}
        self._made = 0

    def plan(self, command: Command) -> tuple[Prediction, tuple[Hold, ...], tuple[str, ...]]:
        """The prediction for ``command``, the hold it installs and the hold it releases.
        ``PlayError`` for a release of a hold that does not exist (nothing changes)."""
        holds: tuple[Hold, ...] = ()
        release: tuple[str, ...] = ()
        if command.release is not None:
            if command.release not in self.holds:
                known = ", ".join(self.holds) or "none yet"
                raise PlayError(f"release: no hold {command.release!r}; holds: {known}")
            release = (command.release,)
            del self.holds[command.release]
        if command.hold is not None:
            kind, at, count = command.hold
            self._made += 1
            hold = Hold(id=f"h{self._made}", kind=kind, at=at, count=count)
            holds = (hold,)
            self.holds[hold.id] = ModelHold(hold.id, kind, at, count)
            self.counts[hold.id] = count
        action = command.action or "observe"
        prediction = predict(
            self.states,
            action,
            "listener" if action in LISTENER_ACTIONS else command.actor,
            list(self.holds.values()),
            released=bool(release),
        )
        return prediction, holds, release

    def learn(self, states: Mapping[str, TcpState], dropped: Mapping[str, object]) -> None:
        """Start the next prediction from these states and hold counters."""
        self.states.update({end: states[end] for end in ENDS if end in states})
        for hold_id, count in dropped.items():
            model, limit = self.holds.get(hold_id), self.counts.get(hold_id)
            if model is not None and limit is not None and isinstance(count, int):
                self.holds[hold_id] = replace(model, left=max(0, limit - count))


class PlaySession:
    """Commands in, steps out, on one ``LabRun`` that ``drive`` placed and started."""

    def __init__(self, runner: LabRun, topology: Topology, lang: str, say: Say) -> None:
        self.runner = runner
        self.topology = topology
        self.lang = lang
        self.say = say
        self.played: list[Played] = []
        self.history: list[str] = []
        self.model = PlayModel()
        self._pending: tuple[Command, Prediction] | None = None
        forward = runner.emit
        runner.emit = lambda event: forward(self._amend(event))

    async def handle(self, line: str) -> bool:
        """Do one command line; False when the session should end (``quit``)."""
        try:
            command = parse_command(line)
        except PlayError as exc:
            self.say(f"play: {exc}")
            return True
        if command is None:
            return True
        self.history.append(command.line)
        if command.verb == "quit":
            return False
        if command.verb == "help":
            self.say(play_text("help", self.lang, kinds=hold_kinds_listing()))
        elif command.verb == "history":
            for n, text in enumerate(self.history[:-1], start=1):
                self.say(f"{n:>4}  {text}")
        elif command.verb == "save":
            assert command.path is not None
            self.save(Path(command.path))
        else:
            await self.act(command)
        return True

    async def act(self, command: Command) -> StepReport | None:
        """Turn the command into a step, predict it, run it, learn the kernel's states."""
        if command.verb in HOLD_COMMANDS and self.topology is Topology.LOOPBACK:
            self.say("play: holds are nftables rules in namespaces: start play --topology netns")
            return None
        try:
            prediction, holds, release = self.model.plan(command)
        except PlayError as exc:
            self.say(f"play: {exc}")
            return None
        for hold in holds:
            left = f"the next {hold.count}" if hold.count else "until released"
            self.say(f"play: hold {hold.id}: {hold.kind} at the {hold.at}'s input, {left}")
        args = dict(command.args)
        if command.action == "connect" and self.model.holds:
            # A held handshake would make connect() wait out the step: return in SYN_SENT.
            args["wait"] = False
        n = len(self.played) + 1
        step = Step(
            index=n,
            id=f"{n}-{command.verb}",
            actor=command.actor,
            action=command.action or "observe",
            args=args,
            expect=prediction.expect(),
            explain=Text("", ""),
            timeout=command.wait + STEP_TIMEOUT if command.wait else STEP_TIMEOUT,
            # ``wait``: the states must stay as predicted; with no prediction, only watched.
            stay=command.wait,
            holds=holds,
            release=release,
        )
        self._pending = (command, prediction)
        try:
            report = await self.runner.run_step(step)
        finally:
            self._pending = None
        self.played.append(Played(command, step, prediction, report))
        observed = {
            end: from_kernel(obs.state)
            for end in ENDS
            if (obs := report.observed.get(end)) is not None
        }
        absent = {end: TcpState.CLOSE for end in ENDS if end not in report.observed}
        self.model.learn(
            {**absent, **observed},
            {hold_id: info.get("dropped") for hold_id, info in report.holds.items()},
        )
        return report

    def _amend(self, event: Event) -> Event:
        """A play step's report: the model's lines and the kernel's verdict as its text."""
        if not isinstance(event, StepReport) or self._pending is None:
            return event
        _, prediction = self._pending
        # The model predicts states, not outcomes: an error a command meets (ECONNREFUSED,
        # ETIMEDOUT from a recv with nothing to read) is shown as the outcome, not as a
        # disagreement with the model.
        mismatches = [m for m in event.mismatches if not m.endswith(f"({UNEXPECTED_ERROR})")]
        explanation = {
            lang: "\n\n".join(_explain(prediction, event, mismatches, lang))
            for lang in ("en", "zh")
        }
        return replace(
            event,
            mismatches=mismatches,
            agrees=not mismatches,
            explanation=explanation,
            explain_key=f"play.{event.action}",
        )

    # -- save -------------------------------------------------------------------------------

    def controls(self) -> list[Control]:
        """The browser's panel for now (``controls``)."""
        return controls(
            self.model.states,
            [p.command for p in self.played],
            topology=self.topology,
            lang=self.lang,
            holds=list(self.model.holds),
            server_seen=any(
                (seen := p.report.observed.get("server")) is not None and seen.state != ABSENT
                for p in self.played
            ),
        )

    def lab_file(self) -> str | None:
        """The session so far as the text ``save`` writes (the browser's download); None
        before any step. Safe from another thread: it reads a copy of the steps played."""
        played = list(self.played)
        return lab_toml(played, self.topology, "played") if played else None

    def save(self, path: Path) -> bool:
        """Write the session so far as a lab file; say why not in one line."""
        if not self.played:
            self.say("play: nothing to save yet")
            return False
        try:
            check_output(path)
            text = lab_toml(self.played, self.topology, _lab_name(path))
            write_output(path, lambda stream: stream.write(text.encode()), announce=self.say)
        except OutputError as exc:
            self.say(f"play: save: {exc}")
            return False
        n = len(self.played)
        steps = f"{n} step" + ("" if n == 1 else "s")
        self.say(f"play: saved {steps} to {path} (handshake-lab run {path})")
        return True


def _explain(
    prediction: Prediction, report: StepReport, mismatches: list[str], lang: str
) -> list[str]:
    out: list[str] = []
    if not prediction.known:
        assert prediction.unknown is not None
        end, segment = prediction.unknown
        reason = play_text("timer", lang, end=end, segment=segment)
        out.append(play_text("model_unknown", lang, reason=reason))
    else:
        lines = [m.text() for m in prediction.moves if m.before is not m.after]
        lines += [
            play_text("dropped", lang, hold=d.hold, segment=d.text()) for d in prediction.drops
        ]
        lines += [
            play_text("illegal", lang, event=i.event.name, state=i.state.name, end=i.end)
            for i in prediction.illegal
        ]
        if lines:
            out.append(play_text("model", lang) + " " + "; ".join(lines) + ".")
        else:
            out.append(play_text("model_quiet", lang))
        if mismatches:
            out.append(play_text("disagrees", lang, what="; ".join(mismatches)))
        else:
            out.append(play_text("agrees", lang))
    changed: dict[str, list[str]] = {}  # a new state -> the ends now in it
    for end in ENDS:
        obs = report.observed.get(end)
        if obs is None or not obs.agree:
            continue
        if from_kernel(obs.state) is not prediction.before.get(end, TcpState.CLOSE):
            changed.setdefault(obs.state, []).append(end)
    for state, ends in changed.items():
        body = _state_body(state, lang)
        out.append(play_text("now", lang, end=", ".join(ends), state=state, body=body))
    return out


def _state_body(state: str, lang: str) -> str:
    try:
        return state_text(state, lang).body
    except KeyError:
        return ""


# -- the browser's panel --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    """One button of ``play --browser``'s panel: the command line it sends (a ``text`` button
    appends the text the user typed) and, when the command makes no sense now, why not."""

    end: str
    """``client``, ``server``, ``listener``, or ``session`` (wait, releases, quit)."""
    label: str
    command: str
    reason: str = ""
    """Empty: enabled. Else the reason, in the session's language (the button's ``title``)."""
    text: bool = False

    @property
    def enabled(self) -> bool:
        return not self.reason


def _sends_fin(state: TcpState) -> bool:
    """Whether the application can still make this end send its FIN (the RFC table)."""
    return any(
        flags & Flags.FIN
        for event in (MachineEvent.CLOSE, MachineEvent.SEND_EOF)
        if (t := TRANSITIONS.get((state, event))) is not None
        for flags in t.sends
    )


def controls(
    states: Mapping[str, TcpState],
    commands: Sequence[Command],
    *,
    topology: Topology,
    lang: str,
    holds: Sequence[str] = (),
    server_seen: bool = False,
) -> list[Control]:
    """The panel for a session as it stands: every command of every end, enabled where it
    makes sense in that end's state (``states``: the kernel's last states as the model learnt
    them; the RFC table of ``tcp.machine``), the reason on the others. ``commands``: the ones
    that ran as steps; ``holds``: the ids of the holds in place; ``server_seen``: the kernel
    has shown the server's end of the connection (the listener accepted it)."""
    verbs = [(c.verb, c.actor) for c in commands]
    connected = ("connect", "client") in verbs
    closed = {actor for verb, actor in verbs if verb in {"close", "abort"}}
    listens = [c for c in commands if c.action == "listen"]
    accepting = bool(listens) and bool(listens[-1].args.get("accept"))
    netns = topology is Topology.NETNS
    # A SYN or SYN-ACK is still to come (again) while the handshake has not finished.
    handshaking = states["client"] is TcpState.SYN_SENT or states["server"] is TcpState.SYN_RECV

    def why(key: str, **values: object) -> str:
        return play_text(f"no_{key}", lang, **values)

    def state_of(end: str) -> str:
        state = states[end]
        return "ABSENT" if state is TcpState.CLOSE else state.name

    def open_socket(end: str) -> str:
        """Empty if ``end`` has an application socket; else why not."""
        if not connected:
            return why("unconnected", end=end)
        if end in closed:
            return why("closed", end=end)
        if end == "server" and states["server"] is TcpState.CLOSE and not server_seen:
            return why("unaccepted")
        return ""

    def table(end: str, event: MachineEvent) -> str:
        if (states[end], event) in TRANSITIONS:
            return ""
        return why("transition", end=end, state=state_of(end), event=event.name)

    out: list[Control] = []
    connect = why("connected") if connected else table("client", MachineEvent.ACTIVE_OPEN)
    for end in CONN_ENDS:
        if end == "client":
            out.append(Control(end, "connect", "connect", connect))
        sock = open_socket(end)
        data = sock or (
            "" if states[end] in SENDS_DATA else why("send", end=end, state=state_of(end))
        )
        out += [
            Control(end, "send", f"send {end}", data, text=True),
            Control(end, "recv", f"recv {end}", sock),
            Control(end, "shutdown", f"shutdown {end}", sock or table(end, MachineEvent.SEND_EOF)),
            Control(end, "close", f"close {end}", sock),
            Control(end, "abort", f"abort {end}", sock),
        ]
        for what in DROP_KINDS:
            kind_sender = DROP_KINDS[what][1]
            if kind_sender not in ("any", end):
                continue
            if not netns:
                reason = why("netns")
            elif what in {"syn", "synack"} and connected and not handshaking:
                reason = why("handshake_done", segment="SYN" if what == "syn" else "SYN-ACK")
            elif what == "fin" and (end in closed or (connected and not _sends_fin(states[end]))):
                reason = why("fin", end=end, state=state_of(end))
            else:
                reason = ""
            out.append(Control(end, f"drop {what}", f"drop next {what} from {end}", reason))
    listening = "" if states["listener"] is TcpState.LISTEN else why("not_listening")
    out += [
        Control("listener", "listen", "listen", table("listener", MachineEvent.PASSIVE_OPEN)),
        Control(
            "listener",
            "listen noaccept",
            "listen noaccept",
            table("listener", MachineEvent.PASSIVE_OPEN),
        ),
        Control(
            "listener", "accept", "accept", listening or (why("accepting") if accepting else "")
        ),
        Control("listener", "close", "close listener", listening),
    ]
    out.append(Control("session", "wait 1 s", "wait 1", ""))
    for hold_id in holds:
        out.append(Control("session", f"release {hold_id}", f"release {hold_id}", ""))
    out.append(Control("session", "quit", "quit", ""))
    return out


# -- the saved lab --------------------------------------------------------------------------


def _lab_name(path: Path) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_")
    return (name or "played")[:63]


def toml_value(value: object) -> str:
    """A TOML value: JSON's string escapes are TOML's basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    # JSON leaves DEL raw; TOML wants it escaped like the other control characters.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _inline(table: Mapping[str, object]) -> str:
    items = ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in table.items())
    return "{ " + items + " }" if items else "{}"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _saved_explain(played: Played) -> dict[str, str]:
    """The built-in state text of each end the step changed; a placeholder where none did."""
    texts: dict[str, list[str]] = {"en": [], "zh": []}
    for end in ENDS:
        obs = played.report.observed.get(end)
        if obs is None or not obs.agree:
            continue
        if from_kernel(obs.state) is not played.prediction.before.get(end, TcpState.CLOSE):
            for lang, out in texts.items():
                out.append(f"{end}: {obs.state}. {_state_body(obs.state, lang)}")
    return {
        lang: "\n\n".join(out) if out else play_text("teacher", lang)
        for lang, out in texts.items()
    }


def lab_toml(played: list[Played], topology: Topology, name: str) -> str:
    """The session as a lab file (``docs/labs.md``): every command that ran, in order."""
    lines = [
        "# Recorded by 'handshake-lab play'; the expectations are what the kernel showed.",
        "# Replace the TODO texts; 'handshake-lab run' of this file repeats the session.",
        "schema = 1",
        f"name = {toml_value(name)}",
        f"title = {_inline(play_texts('title'))}",
        f"summary = {_inline(play_texts('summary'))}",
        "echo = false",
        f"topologies = [{toml_value(topology.step_set)}]",
    ]
    full = _full_holds(played)
    for position, p in enumerate(played):
        step, report = p.step, p.report
        lines += ["", "[[step]]", f"# play> {p.command.line}", f"id = {toml_value(step.id)}"]
        if step.action != "observe":
            lines.append(f"actor = {toml_value(step.actor)}")
        lines.append(f"action = {toml_value(step.action)}")
        args = dict(step.args)
        if args:
            lines.append(f"args = {_inline(args)}")
        if report.outcome is not None and report.outcome not in {"ok", "pending"}:
            lines.append(f"outcome = {toml_value(report.outcome)}")
        if report.data is not None:
            lines.append(f"data = {toml_value(report.data)}")
        expect: dict[str, str] = {}
        unsure: list[str] = []
        for side, obs in report.observed.items():
            if obs.agree:
                expect[side] = obs.state
            else:
                unsure.append(f"{side} ({obs.note or 'ss and psutil differed'})")
        for side in step.expect:
            if side not in report.observed:
                expect.setdefault(side, ABSENT)
        if unsure:
            lines.append(f"# not expected: the sources disagreed for {', '.join(unsure)}")
        if expect and step.release:
            # What a release changes waits for the kernel's next resend of what was held, which
            # may come before or after the step looks: the next step shows the settled states.
            lines.append(f"# seen when played, not expected on a re-run: {_inline(expect)}")
        elif expect:
            lines.append(f"expect = {_inline(expect)}")
        facts = full.get(position)
        if facts:
            lines.append(f"facts = {_inline(facts)}")
        timeout = SAVED_TIMEOUT
        if step.action == "recv" and report.outcome == "ETIMEDOUT":
            timeout = step.timeout  # the same wait for input that found none
        elif step.action == "observe" and step.stay:
            timeout = min(MAX_TIMEOUT, step.stay + SAVED_TIMEOUT)
        if timeout != SAVED_TIMEOUT:
            lines.append(f"timeout = {toml_value(timeout)}")
        for hold in step.holds:
            hold_table: dict[str, object] = {"id": hold.id, "kind": hold.kind, "at": hold.at}
            if hold.count is not None:
                hold_table["count"] = hold.count
            lines.append(f"hold = {_inline(hold_table)}")
        if step.release:
            lines.append(f"release = {toml_value(step.release[0])}")
        for lang, text in _saved_explain(p).items():
            lines.append(f"explain.{lang} = {toml_value(text)}")
    return "\n".join(lines) + "\n"


def _full_holds(played: list[Played]) -> dict[int, dict[str, object]]:
    """For each step (by position), the counted holds whose nft counter first reached their
    count there: an exact fact a re-run repeats (``dropped.ID = COUNT``)."""
    counts = {h.id: h.count for p in played for h in p.step.holds if h.count is not None}
    out: dict[int, dict[str, object]] = {}
    full: set[str] = set()
    for position, p in enumerate(played):
        for hold_id, info in p.report.holds.items():
            count = counts.get(hold_id)
            if count is not None and hold_id not in full and info.get("dropped") == count:
                full.add(hold_id)
                out.setdefault(position, {})[f"dropped.{hold_id}"] = count
    return out


# -- one whole session ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayRequest:
    topology: Topology
    loop: str = "asyncio"
    lang: str = "en"
    idle: float = DEFAULT_IDLE
    port: int | None = None
    ip: int = 4
    link: Link | None = None
    """``--delay``/``--loss`` (netns only): the wire between the namespaces (``topo.netem``)."""


def play(
    request: PlayRequest,
    emit: Emit,
    read_line: ReadLine,
    say: Say,
    started: StepStarted | None = None,
    ready: Callable[[PlaySession], None] | None = None,
) -> RunRecord:
    """Place the ends, open the listener, then one step per command until EOF, ``quit`` or
    ``idle`` seconds without a command; everything is removed on the way out (also on Ctrl-C,
    SIGTERM, SIGHUP: ``drive`` turns them into ``Interrupted``). ``ready`` is called each time
    the session waits for its next command (the browser's panel shows what makes sense now)."""
    run_request = RunRequest(
        lab=play_lab(request.topology),
        topology=request.topology,
        loop=request.loop,
        port=request.port,
        ip=request.ip,
        link=request.link,
    )

    async def body(runner: LabRun) -> None:
        session = PlaySession(runner, request.topology, request.lang, say)
        try:
            await runner.start()
            await session.act(Command("listen", "listen", "server", "listen", {"accept": True}))
            while True:
                if ready is not None:
                    ready(session)
                try:
                    # net.waits: 3.11's asyncio.wait_for can lose a Ctrl-C (gh-86296).
                    line = await wait_for(read_line(), request.idle)
                except TimeoutError:
                    say(f"play: no command for {request.idle:g} s; ending the session")
                    break
                if line is None or not await session.handle(line):
                    break
        except BaseException:
            await runner._cleanup()  # the same release as an interrupted run
            raise
        await runner.finish()

    return drive(run_request, emit, body, started=started)


__all__ = [
    "COMMANDS",
    "Command",
    "Control",
    "PlayError",
    "PlayRequest",
    "PlaySession",
    "completions",
    "controls",
    "lab_toml",
    "parse_command",
    "play",
    "play_lab",
    "toml_value",
]
