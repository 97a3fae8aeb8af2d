"""The lab runner: the one interpreter of lab steps.

For each step it performs the action on real sockets (``net``), then reads the kernel's socket
table from every observer (``observe``) until each side the step names is in the expected state
or the step's timeout passes, and emits a ``StepReport``. It never invents a state: what it
reports is what the observers read in this run, with each source's own spelling kept beside the
reconciled state.

Waiting is a bounded poll for a condition (the expected states), not a sleep: a step on loopback
usually settles in a few milliseconds; a step that waits for a SYN retransmit declares a longer
timeout in the lab file. The time spent waiting is reported (``settle_ms``) so benchmarks can
separate the tool's own cost from the kernel's timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from handshake_lab.lab.evidence import (
    Evidence,
    name_endpoints,
    segment_records,
    transition_records,
)
from handshake_lab.lab.quiz import Question, Quiz
from handshake_lab.lab.timeline import Key
from handshake_lab.lab.timeline import reconcile as reconcile_timeline
from handshake_lab.net.loops import loop_version
from handshake_lab.net.raw import syn_numbers, tcp_header_of
from handshake_lab.net.sides import (
    WILDCARD6,
    ClientSide,
    LocalClients,
    LocalServer,
    ServerSide,
    Snapshot,
    close_together,
)
from handshake_lab.observe.base import Address, Observer
from handshake_lab.observe.reconcile import Reconciled, reconcile
from handshake_lab.observe.tcpinfo import TcpInfo, read_tcp_info, rounded
from handshake_lab.observe.versions import base_versions
from handshake_lab.placement.topology import Topology
from handshake_lab.record.events import (
    Event,
    LabResult,
    LabStarted,
    SideObservation,
    StepReport,
)
from handshake_lab.spec.loader import COMPARISON_RE
from handshake_lab.spec.model import (
    ABSENT,
    KERNEL_FIGURES,
    MAIN_PORT,
    STREAM_ACTIONS,
    Hold,
    Lab,
    Step,
    cited_sysctls,
    listener_side,
    server_side,
)
from handshake_lab.tcp.segments import Flags, seq_diff
from handshake_lab.tcp.states import TcpState
from handshake_lab.topo.nft import hold_matches
from handshake_lab.topo.pair import read_sysctls

RELEASE_LEAD = 0.6
"""Seconds between telling holds to go together and the instant they go: room for the nft
calls on a loaded machine (``_apply_holds``)."""
PAIRED_WITHIN = 0.001
"""FINs held at two ends count as resent together (one timer run) when their last resends
reached the capture this close (seconds; ``_await_paired_fins``)."""
PAIR_POLL = 0.02
POLL_INTERVAL = 0.005
STAY_POLL_INTERVAL = 0.05
SYN_FATES = ("TcpExt.ListenDrops", "TcpExt.SyncookiesSent")
"""The counters of a listener's namespace that count a SYN it made no request socket for:
dropped (a full queue, for any reason), or answered with a SYN cookie."""
NON_ERROR_OUTCOMES = frozenset({"ok", "pending", "data", "EOF"})
SERVER, CLIENT = "server", "client"
UNEXPECTED_ERROR = "the lab did not expect an error"
"""The end of the mismatch for an error outcome a step did not name (``play`` leaves it out:
there a command's errno is its outcome, not a disagreement)."""

Emit = Callable[[Event], None]
ActResult = tuple[str | None, str | None, dict[str, object]]
"""(outcome, received text, facts) of one action."""
Pause = Callable[[Step], Awaitable[None]]
Ask = Callable[[Step, list[Question]], Awaitable[None]]
StepStarted = Callable[[Step, int, int], None]
"""Told (step, position, number of steps) as a step's action begins, after its quiz
questions: a terminal shows a progress line while the step waits for the kernel."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    loop: str = "asyncio"
    topology: Topology = Topology.LOOPBACK
    host: str = "127.0.0.1"
    port: int | None = None
    step_set: str | None = None
    """The lab's step set to run; None: the topology's own (``Topology.step_set``)."""
    host6: str | None = None
    """The server's IPv6 address in a run of both families (``ip = "dual"``); ``host`` is
    then its IPv4 one. ``connect`` with ``family = 6`` goes here."""
    link: Mapping[str, float] = field(default_factory=dict)
    """``--delay``/``--loss`` as the run record keeps it (``topo.netem.Link.record``)."""

    def __post_init__(self) -> None:
        # Accept the enum's value too ("netns"), as callers outside the CLI pass it.
        object.__setattr__(self, "topology", Topology(self.topology))


class LabRun:
    """One run of one lab. Create, then ``await run()`` inside the chosen event loop."""

    def __init__(
        self,
        lab: Lab,
        options: RunOptions,
        observers: Sequence[Observer],
        emit: Emit,
        pause: Pause | None = None,
        *,
        server: ServerSide | None = None,
        clients: ClientSide | None = None,
        evidence: Evidence | None = None,
        shared_table: bool | None = None,
        quiz: Quiz | None = None,
        ask: Ask | None = None,
        started: StepStarted | None = None,
    ) -> None:
        """Without ``server``/``clients`` both live here on loopback and share ``observers``."""
        if lab.dual and options.host6 is None:
            raise ValueError(f"lab {lab.name} uses both families: RunOptions needs host6")
        self.lab = lab
        self.options = options
        self.emit = emit
        self.pause = pause
        self.ports: dict[str, int] = {}
        self.server: ServerSide = server or LocalServer(
            options.host,
            observers,
            echo=lab.echo,
            port_host=WILDCARD6 if options.host6 else None,  # both families: a port free in both
        )
        self.clients: ClientSide = clients or LocalClients(options.host, lab.clients, observers)
        # On loopback both sides read the same table: read it once per poll.
        self.shared_table = (
            shared_table if shared_table is not None else server is None and clients is None
        )
        self.evidence = evidence
        self.t0 = time.monotonic()
        self.holds: dict[str, Hold] = {}
        self.released: dict[str, float] = {}  # hold -> when it stopped dropping (run ms)
        self.steps = lab.steps_for(options.step_set or options.topology.step_set)
        # Clients that will connect again from their port connect first from a quiet one.
        self._reconnecting = {step.actor for step in self.steps if step.action == "reconnect"}
        self.reports: list[StepReport] = []
        self._began = self.t0
        self.quiz = quiz
        self.ask = ask
        self.started = started
        # How many packets and transitions earlier steps reported: each step reports what came
        # after, also what a quiz's look at the wire collected before the step ran.
        self._reported_packets = 0
        self._reported_events = 0
        self._known: dict[Key, str] = {}  # each socket's last state (lab.timeline)
        self._counts: dict[str, int] = {}  # each hold's nft counter, last read
        self._marked: dict[str, int] = {}  # how many captured segments each hold marked
        self._bound: dict[str, str] = {}  # slot -> the wildcard its listener was bound to
        # (source, flags, seq) of each segment a forge sent -> copies not yet found on the wire
        self._forged: dict[tuple[str, str, int], int] = {}

    # -- ports ------------------------------------------------------------------------------

    async def _allocate_ports(self) -> None:
        if self.options.port is not None:
            self.ports[MAIN_PORT] = await self.server.reserve_port(self.options.port, ())
        aliases = self.lab.port_aliases()  # a second listener on another slot's port
        for slot in self.lab.ports:
            if slot not in self.ports and slot not in aliases:
                taken = tuple(self.ports.values())
                self.ports[slot] = await self.server.reserve_port(None, taken)
        for slot, same in aliases.items():
            self.ports[slot] = self.ports[same]

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> LabResult:
        """Every step of the lab in order: ``start``, ``run_step`` each, ``finish``."""
        await self.start()
        try:
            for step in self.steps:
                if self.pause is not None:
                    await self.pause(step)
                await self.run_step(step)
        except BaseException:
            await self._cleanup()
            raise
        return await self.finish()

    async def start(self) -> None:
        """Reserve the ports, start the evidence and emit ``LabStarted``."""
        self._began = self.t0 = time.monotonic()
        await self._allocate_ports()
        if any(s.action == "forge" for s in self.steps):
            # Before the first connection: a forge needs the numbers of its handshake.
            await self.clients.open_tap(sorted(set(self.ports.values())))
        if self.evidence is not None:
            await asyncio.to_thread(self.evidence.start, sorted(set(self.ports.values())))
        lab = self.lab
        figures = [*KERNEL_FIGURES, *cited_sysctls(lab.texts())]
        kernel = await asyncio.to_thread(
            read_sysctls, list(dict.fromkeys(figures)), getattr(self.clients, "netns", None)
        )
        versions = base_versions()
        versions["loop"] = f"{self.options.loop} {loop_version(self.options.loop)}"
        self.emit(
            LabStarted(
                name=lab.name,
                title=lab.title.as_dict(),
                summary=lab.summary.as_dict(),
                intro=lab.intro.as_dict() if lab.intro else None,
                loop=self.options.loop,
                topology=self.options.topology.value,
                host=" ".join(h for h in (self.server.host, self.options.host6) if h),
                ports=dict(self.ports),
                observers=self.server.observer_names(),
                steps=len(self.steps),
                versions=versions,
                path=str(lab.path),
                evidence=self.evidence.describe() if self.evidence else {},
                notes=list(self.evidence.notes) if self.evidence else [],
                kernel=kernel,
                link=dict(self.options.link),
            )
        )

    async def run_step(self, step: Step) -> StepReport:
        """Perform one step, emit its report and return it. A step that is not one of the
        lab's (``play`` makes them one at a time) is appended to ``steps`` first."""
        if not any(s is step for s in self.steps):
            self.steps = (*self.steps, step)
        report = await self._run_step(step, len(self.reports) + 1)
        self.reports.append(report)
        self.emit(report)
        return report

    async def finish(self) -> LabResult:
        """Release every socket and the evidence, then emit and return ``LabResult``."""
        await self._cleanup()
        reports = self.reports
        disagreed = [r.id for r in reports if not r.agrees]
        result = LabResult(
            name=self.lab.name,
            passed=not disagreed,
            steps=len(reports),
            agreed=len(reports) - len(disagreed),
            disagreed=len(disagreed),
            duration_s=round(time.monotonic() - self._began, 3),
            settle_s=round(sum(r.settle_ms for r in reports) / 1000, 3),
            disagreed_steps=disagreed,
            checks=[
                {"name": c.name, "ok": c.ok, "detail": c.detail}
                for c in (self.evidence.checks() if self.evidence else [])
            ],
            quiz=self.quiz.summary() if self.quiz else None,
        )
        self.emit(result)
        return result

    async def _cleanup(self) -> None:
        # Idempotent (``play`` may end a session that already finished). Shielded and
        # bounded: on Ctrl-C the sockets must still be released, and a stuck close must not
        # keep the user waiting.
        async def release() -> None:
            await self.clients.close_all()
            await self.server.close_all()

        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(asyncio.shield(release()), 5.0)
        if self.evidence is not None:
            await asyncio.shield(asyncio.to_thread(self.evidence.stop))

    async def _run_step(self, step: Step, position: int) -> StepReport:
        questions, numbers, sender = await self._quiz_before(step)
        if self.started is not None:
            self.started(step, position, len(self.steps))
        t0 = time.monotonic()
        await self._apply_holds(step)
        outcome, data, facts = await self._act(step)
        t1 = time.monotonic()
        observed, every_side, observed_at = await self._settle(step)
        t2 = time.monotonic()
        tcp_info = await self._tcp_info(observed)
        segments: list[dict[str, object]] = []
        transitions: list[dict[str, object]] = []
        if self.evidence is not None:
            # Before the counters: every drop the capture saw is then counted already.
            segments, transitions = await self._evidence(every_side, observed_at)
        holds = await self._hold_counts(step, facts)
        if self._mark_drops(segments) and self.evidence is not None:
            # A hold counted drops that are not among the segments read: they crossed after
            # the capture was read. The capture sees a segment before the hook that drops it,
            # so one more read, after the counters, holds every drop they count.
            late = await self._late_segments()
            self._mark_drops(late)
            segments += late
        self._mark_forged(segments)
        mismatches = self._mismatches(step, observed, outcome, data, facts)
        if self.quiz is not None and questions:
            states = {
                side: (r.state.name if r is not None and r.state is not None else ABSENT)
                for side, r in observed.items()
            }
            self.quiz.grade(questions, states, outcome, self._ack_after(t0, sender, numbers))
        shown_facts = {
            k: v for k, v in facts.items() if step.action != "counters" or k in step.facts
        }
        return StepReport(
            index=position,
            id=step.id,
            actor=step.actor,
            action=step.action,
            args=dict(step.args),
            expected={
                side: (state.name if state is not None else ABSENT)
                for side, state in step.expect.items()
            },
            observed={side: _side_observation(side, r) for side, r in observed.items()},
            outcome=outcome,
            expected_outcome=step.outcome,
            data=data,
            expected_data=step.data,
            facts=shown_facts,
            expected_facts=dict(step.facts),
            agrees=not mismatches,
            mismatches=mismatches,
            explain_key=f"{self.lab.name}.{step.explain_key}",
            explanation=step.explain.as_dict(),
            action_ms=round((t1 - t0) * 1000, 3),
            settle_ms=round((t2 - t1) * 1000, 3),
            observed_ms=round((observed_at - self.t0) * 1000, 3),
            total_steps=len(self.steps),
            segments=segments,
            transitions=transitions,
            holds=holds,
            quiz=[q.record() for q in questions],
            tcp_info=tcp_info,
        )

    async def _tcp_info(self, observed: Mapping[str, Reconciled | None]) -> dict[str, TcpInfo]:
        """The kernel's srtt, rttvar and rto of each shown connected socket, read right after
        the step's table (``observe.tcpinfo``; what ``ss -i`` prints)."""
        tuples = self._tuples()
        sockets: dict[str, tuple[Address, Address]] = {}
        netns: dict[str, str | None] = {}
        for side, r in observed.items():
            end, tup = tuples.get(side, (CLIENT, None))
            if r is None or r.state is None or tup is None or tup[1] is None:
                continue
            sockets[side] = (tup[0], tup[1])
            owner = self.clients if end == CLIENT else self.server
            netns[side] = getattr(owner, "netns", None)
        if not sockets:
            return {}
        found = await asyncio.to_thread(read_tcp_info, sockets, netns)
        return rounded((side, found[side]) for side in sockets if side in found)

    # -- quiz ---------------------------------------------------------------------------------

    def _endpoint_of(self, step: Step) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """(sender, peer) endpoints of the step's actor's connection, if it has one."""
        if step.actor == SERVER:
            tup = self.clients.tuple_of(str(step.args.get("conn", "client")))
            if tup is None:
                return None
            client, server = tup
            return (server.host, server.port), (client.host, client.port)
        if step.actor in self.lab.clients:
            tup = self.clients.tuple_of(step.actor)
            if tup is None:
                return None
            local, remote = tup
            return (local.host, local.port), (remote.host, remote.port)
        return None

    async def _quiz_before(
        self, step: Step
    ) -> tuple[list[Question], dict[str, int], tuple[tuple[str, int], tuple[str, int]] | None]:
        if self.quiz is None:
            return [], {}, None
        numbers: dict[str, int] = {}
        ends = self._endpoint_of(step)
        if self.evidence is not None and ends is not None:
            await asyncio.to_thread(self.evidence.collect)
            sent = [
                p
                for p in self.evidence.packets
                if (p.src, p.src_port) == ends[0] and (p.dst, p.dst_port) == ends[1]
            ]
            if sent:
                next_seq = sent[-1].segment.next_seq
                if step.action in {"close", "send_eof"}:
                    # The seed's names: the client's FIN is seq=u, the server's seq=w.
                    numbers["w" if step.actor == SERVER else "u"] = next_seq
                elif step.action == "send":
                    numbers["s"] = next_seq
                    numbers["n"] = len(str(step.args.get("data", "")).encode())
        tuples = {
            side: f"{tup[0]} > {tup[1]}" if tup[1] is not None else f"{tup[0]}"
            for side, (_, tup) in self._tuples().items()
            if tup is not None
        }
        questions = self.quiz.questions(step, tuples, numbers)
        if questions and not self.quiz.prefilled(step, questions) and self.ask is not None:
            await self.ask(step, questions)
        return questions, numbers, ends

    def _ack_after(
        self,
        t0: float,
        ends: tuple[tuple[str, int], tuple[str, int]] | None,
        numbers: Mapping[str, int],
    ) -> int | None:
        """The peer's first acknowledgment, after ``t0``, of what the step sent."""
        if self.evidence is None or ends is None:
            return None
        base = numbers.get("u", numbers.get("w", numbers.get("s")))
        if base is None:
            return None
        for p in self.evidence.packets:
            if (
                p.timestamp < t0
                or (p.src, p.src_port) != ends[1]
                or (p.dst, p.dst_port) != ends[0]
            ):
                continue
            if Flags.ACK in p.flags and seq_diff(p.ack, base) > 0:
                return p.ack
        return None

    # -- holds and evidence -----------------------------------------------------------------

    def _side_for(self, at: str) -> ServerSide | ClientSide:
        return self.server if at == SERVER else self.clients

    async def _apply_holds(self, step: Step) -> None:
        """Release what the step releases, then install its holds, before its action.

        Two or more holds released by one step go at the same instant: each is told to stop
        dropping at the next whole second of the kernel's clock at least ``RELEASE_LEAD`` s
        ahead (``topo.nft.release``), and the step waits for that instant. Released one after
        the other, a retransmission could pass one hold and meet the other still dropping.
        """
        at: int | None = None
        if len(step.release) > 1:
            await self._await_paired_fins(step)
            at = math.ceil(time.time() + RELEASE_LEAD)
        await asyncio.gather(
            *(
                self._side_for(self.holds[hold_id].at).ns_op(
                    "release_hold", {"id": hold_id} if at is None else {"id": hold_id, "at": at}
                )
                for hold_id in step.release
            )
        )
        # From when on a released hold no longer dropped: the instant it was given, or the end
        # of the nft call that emptied it (what the capture's drop marks are cut at).
        until = time.monotonic() if at is None else at - time.time() + time.monotonic()
        for hold_id in step.release:
            self.released[hold_id] = (until - self.t0) * 1000
        if at is not None:
            await asyncio.sleep(max(0.0, at - time.time()))  # until that instant has passed
        for hold in step.holds:
            await self._side_for(hold.at).ns_op(
                "add_hold",
                {
                    "id": hold.id,
                    "kind": hold.kind,
                    "port": self.ports[hold.port],
                    "count": hold.count,
                    "hook": hold.hook,
                },
            )
            self.holds[hold.id] = hold

    async def _await_paired_fins(self, step: Step) -> None:
        """Before FINs held at two or more ends go together, wait (up to the step's timeout)
        until the last copies the holds dropped were resent together.

        Released together, two held FINs cross only if their next resends leave in the same
        timer run, before either arrives. Closed in one system call (``close_at_once``) they
        almost always do, but on a loaded machine a tick can fall between the two closes, and
        the two retransmission timers then fire in neighbouring ticks (or, rounded to a
        coarser timer-wheel slot, milliseconds apart) until a later resend brings them into
        one slot. The capture shows which: the wait ends at the first resend pair that left
        together. Only resends tell: the first FINs leave from the two close() calls, which
        can be under a millisecond apart yet on either side of a tick (seen: 0.47 ms apart,
        then every resend 3.9 and 32 ms apart). Without a capture, or when the timeout
        passes, the holds go as they are, and the run shows what the kernel did."""
        holds = [
            self.holds[hold_id]
            for hold_id in step.release
            if self.holds[hold_id].kind == "hold_fin" and self.holds[hold_id].hook == "input"
        ]
        if len(holds) < 2 or self.evidence is None or not self.evidence.capture_on:
            return
        deadline = time.monotonic() + step.timeout
        while True:
            await asyncio.to_thread(self.evidence.collect)
            resends = [self._held_copies(hold)[1:] for hold in holds]  # after the first
            if all(resends):
                lasts = [times[-1] for times in resends]
                if max(lasts) - min(lasts) <= PAIRED_WITHIN:
                    return
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(PAIR_POLL)

    def _held_copies(self, hold: Hold) -> list[float]:
        """When the capture saw each segment ``hold`` drops (its kind, port and side)."""
        assert self.evidence is not None
        host, port = self._hold_address(hold)
        return [
            packet.timestamp
            for packet in self.evidence.packets
            if packet.dst == host
            and port in (packet.src_port, packet.dst_port)
            and hold_matches(hold.kind, packet.segment.flags_text, packet.payload_len)
        ]

    def _hold_address(self, hold: Hold) -> tuple[str, int]:
        """Where ``hold`` drops: the address of the side it sits at, and its port."""
        host = self.server.host if hold.at == SERVER else self._client_host()
        return host, self.ports[hold.port]

    async def _hold_counts(
        self, step: Step, facts: dict[str, object]
    ) -> dict[str, dict[str, object]]:
        """Read the nft counter of every hold so far: a drop is proved, never assumed."""
        out: dict[str, dict[str, object]] = {}
        for hold_id, hold in self.holds.items():
            count = await self._side_for(hold.at).ns_op("dropped", {"id": hold_id})
            facts[f"dropped.{hold_id}"] = count
            if isinstance(count, int):
                self._counts[hold_id] = count
            out[hold_id] = {
                "kind": hold.kind,
                "at": hold.at,
                "dropped": count,
                "active": hold_id not in self.released,
            }
        return out

    async def _evidence(
        self, observed: Mapping[str, Reconciled | None], observed_at: float
    ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """The step's segments and its transitions, reconciled with the table (``timeline``)."""
        assert self.evidence is not None
        await asyncio.to_thread(self.evidence.collect)
        events = self.evidence.events[self._reported_events :]
        self._reported_events = len(self.evidence.events)
        segments = self._new_segments()
        tuples = {side: tup for side, (_, tup) in self._tuples().items()}
        keyed: dict[tuple[tuple[str, int], tuple[str, int] | None], str] = {}
        # Server sides first, so a client's own name wins where the two share a 4-tuple
        # (a self-connected socket is its own peer).
        ordered = sorted(tuples.items(), key=lambda item: item[0] in self.lab.clients)
        for side, tup in ordered:
            if tup is not None:
                local, remote = tup
                remote_key = (remote.host, remote.port) if remote else None
                keyed[((local.host, local.port), remote_key)] = side
        traced = transition_records(events, keyed, self.evidence.packets, self.t0)
        seen: dict[Key, tuple[str, str]] = {}
        for side in sorted(observed, key=lambda name: name in self.lab.clients):
            r = observed[side]
            if r is not None:
                peer = str(r.remote) if r.remote is not None else None
                seen[(str(r.local), peer)] = (side, r.state.name if r.state else ABSENT)
        table_now: dict[Key, str] = {}
        if traced and any(t["new"] == "CLOSE" for t in traced):
            # A move traced after the step's read: what the table says of it now.
            for table in (await self._snapshot(fast=True)).values():
                for records in table.values():
                    for rec in records:
                        peer = str(rec.remote) if rec.remote and rec.remote.port else None
                        table_now.setdefault((str(rec.local), peer), rec.state.name)
                    break  # one source per end is enough
        transitions = reconcile_timeline(
            traced, seen, round((observed_at - self.t0) * 1000, 3), table_now, self._known
        )
        return segments, transitions

    def _new_segments(self) -> list[dict[str, object]]:
        """The captured segments not reported yet, as the record keeps them."""
        assert self.evidence is not None
        packets = self.evidence.packets[self._reported_packets :]
        self._reported_packets = len(self.evidence.packets)
        names = name_endpoints({side: tup for side, (_, tup) in self._tuples().items()})
        return segment_records(packets, self.evidence.packets, names, self.t0)

    async def _late_segments(self) -> list[dict[str, object]]:
        """The segments captured since the step's evidence was read (its trace events are
        left for the next step's report)."""
        assert self.evidence is not None
        await asyncio.to_thread(self.evidence.collect)
        return self._new_segments()

    def _mark_drops(self, segments: Sequence[dict[str, object]]) -> bool:
        """Mark the captured segments each hold dropped, as many as its nft counter says.

        A capture sees a segment before the receiving end's input hook drops it, so a dropped
        segment is in the capture: the first segments matching a hold (its kind's flags, its
        port, towards the side it sits at) while it is active, up to the counter's count, are
        the ones it dropped (``nft`` drops the first COUNT matches). A released hold still
        dropped what it met before its release took effect: a step reports the segments that
        came since the last one's report, so some may predate its own release. Holds on the
        output hook drop before the capture and mark nothing. Returns whether an input hold's
        counter still counts more drops than were marked so far.
        """
        for seg in segments:
            seg["dropped"] = False
            seg["hold"] = None
        for hold_id, hold in self.holds.items():
            if hold.hook != "input":
                continue
            host, port = self._hold_address(hold)
            until = self.released.get(hold_id)
            for seg in segments:
                if self._marked.get(hold_id, 0) >= self._counts.get(hold_id, 0):
                    break
                if until is not None and float(str(seg["t_ms"])) > until:
                    continue
                if seg["dropped"] or _host_of(seg["dst"]) != host:
                    continue
                if port not in (_port_of(seg["src"]), _port_of(seg["dst"])):
                    continue
                if hold_matches(hold.kind, str(seg["flags"]), int(str(seg["len"]))):
                    seg["dropped"] = True
                    seg["hold"] = hold_id
                    self._marked[hold_id] = self._marked.get(hold_id, 0) + 1
        return any(
            self._marked.get(hold_id, 0) < self._counts.get(hold_id, 0)
            for hold_id, hold in self.holds.items()
            if hold.hook == "input"
        )

    def _mark_forged(self, segments: Sequence[dict[str, object]]) -> None:
        """Mark the captured segments a forge sent (``"forged": true``): they carry a client's
        4-tuple but its kernel did not send them. Matched by source, flags and number, as many
        as were sent, in whichever step's report they arrive."""
        for seg in segments:
            key = (str(seg["src"]), str(seg["flags"]), int(str(seg["seq"])))
            if self._forged.get(key, 0) > 0 and not seg["len"]:
                seg["forged"] = True
                self._forged[key] -= 1

    def _client_host(self) -> str:
        for side, (end, tup) in self._tuples().items():
            if end == CLIENT and tup is not None and side in self.lab.clients:
                return tup[0].host
        return self.server.host

    # -- actions ----------------------------------------------------------------------------

    async def _act(self, step: Step) -> ActResult:
        """Perform the step's action. Returns (outcome, received text, facts)."""
        return await ACTIONS_TABLE[step.action](self, step)

    async def _act_observe(self, step: Step) -> ActResult:
        return None, None, {}

    async def _act_sysctl(self, step: Step) -> ActResult:
        side = self._side_for(SERVER if step.actor == SERVER else CLIENT)
        await side.ns_op("sysctl", {"key": step.args["key"], "value": step.args["value"]})
        return "ok", None, {}

    async def _act_counters(self, step: Step) -> ActResult:
        side = self._side_for(SERVER if step.actor == SERVER else CLIENT)
        counters = await side.ns_op("counters", {})
        assert isinstance(counters, dict)
        return "ok", None, dict(counters)

    async def _act_listen(self, step: Step) -> ActResult:
        args = step.args
        slot = str(args.get("port", MAIN_PORT))
        reuse = args.get("reuse_address", False)
        bind = str(args.get("bind", "server"))
        v6only = args.get("v6only", "default")
        if bind != "server":
            self._bound[slot] = bind  # the side's 4-tuple: the wildcard, also if bind fails
        outcome, facts = await self.server.listen(
            slot,
            self.ports[slot],
            backlog=int(args.get("backlog", 16)),
            reuse_address=None if reuse == "default" else bool(reuse),
            accept=bool(args.get("accept", True)),
            bind=None if bind == "server" else bind,
            v6only=None if v6only == "default" else bool(v6only),
        )
        return outcome, None, dict(facts)

    async def _act_accept(self, step: Step) -> ActResult:
        return await self.server.accept(str(step.args.get("port", MAIN_PORT))), None, {}

    async def _act_unlisten(self, step: Step) -> ActResult:
        return await self.server.unlisten(str(step.args.get("port", MAIN_PORT))), None, {}

    async def _act_stream(self, step: Step) -> ActResult:
        """The actions on one connection (``STREAM_ACTIONS``): on the server's end of a
        connection or on a client's socket, whichever the step's actor is."""
        args = step.args
        data = str(args["data"]) if "data" in args else None
        extra = {k: v for k, v in args.items() if k not in {"data", "conn"}}
        if step.actor == SERVER:
            tup = self.clients.tuple_of(str(args.get("conn", "client")))
            if tup is None:
                return "ENOTCONN", None, {}
            outcome, text, facts = await self.server.stream_action(
                tup[0], step.action, data, step.timeout, extra
            )
            return outcome, text, dict(facts)
        outcome, text, facts = await self.clients.stream_action(
            step.actor, step.action, data, step.timeout, extra
        )
        return outcome, text, dict(facts)

    async def _act_close_both(self, step: Step) -> ActResult:
        server, clients = self.server, self.clients
        if not (isinstance(server, LocalServer) and isinstance(clients, LocalClients)):
            # The loader keeps close_both out of the steps an agent runs (only = netns-local).
            return "EOPNOTSUPP", None, {}
        name = str(step.args.get("conn", "client"))
        return await close_together(server, clients, name, step.timeout), None, {}

    def _server_address(self, step: Step) -> Address:
        """The server's address (of the step's ``family`` in a dual lab) on the step's slot."""
        host = self.server.host
        if step.args.get("family") == 6:
            if self.options.host6 is None:
                raise ValueError("family = 6 in a run without an IPv6 server address")
            host = self.options.host6
        return Address(host, self.ports[str(step.args.get("port", MAIN_PORT))])

    async def _act_connect(self, step: Step) -> ActResult:
        outcome = await self.clients.connect(
            step.actor,
            self._server_address(step),
            wait=bool(step.args.get("wait", True)),
            timeout=step.timeout,
            retry=bool(step.args.get("retry", False)),
            quiet_port=step.actor in self._reconnecting,
        )
        return outcome, None, {}

    async def _act_churn(self, step: Step) -> ActResult:
        server = self._server_address(step)
        await self.server.set_close_on_eof(True)
        try:
            outcome, made = await self.clients.churn(
                server, int(step.args.get("count", 10)), step.timeout
            )
        finally:
            await self.server.set_close_on_eof(False)
        table = await self.clients.snapshot([server.port])
        first = next(iter(table.values()), [])
        time_wait = sum(
            1
            for r in first
            if r.state is TcpState.TIME_WAIT and r.remote is not None and r.remote == server
        )
        return outcome, None, {"connected": made, "time_wait": time_wait}

    async def _act_self_connect(self, step: Step) -> ActResult:
        port = self.ports[str(step.args.get("port", "self"))]
        return await self.clients.self_connect(step.actor, port, step.timeout), None, {}

    async def _act_stale_syn(self, step: Step) -> ActResult:
        seq = int(step.args["seq"]) if "seq" in step.args else secrets.randbits(32)
        outcome = await self.clients.stale_syn(step.actor, self._server_address(step), seq)
        return outcome, None, {"seq": seq}

    async def _act_reconnect(self, step: Step) -> ActResult:
        outcome = await self.clients.reconnect(
            step.actor, self._server_address(step), step.timeout
        )
        return outcome, None, {}

    async def _act_old_syn(self, step: Step) -> ActResult:
        """A late copy of the SYN that opened the client's last connection: the TCP header as
        the server's listener saved it (TCP_SAVE_SYN), sent again from the client's address
        and port. Facts: its seq and (if it had the option) tsval."""
        server, clients = self.server, self.clients
        if not (isinstance(server, LocalServer) and isinstance(clients, LocalClients)):
            # The loader keeps old_syn out of the steps an agent runs (only = netns-local).
            return "EOPNOTSUPP", None, {}
        tup = clients.tuple_of(step.actor)
        stream = None if tup is None else server.server.connections.get(tup[0])
        if tup is None or stream is None or stream.saved_syn is None:
            return "ENODATA", None, {}
        try:
            header = tcp_header_of(stream.saved_syn)
        except ValueError:
            return "ENODATA", None, {}
        seq, tsval = syn_numbers(header)
        facts: dict[str, object] = {"seq": seq}
        if tsval is not None:
            facts["tsval"] = tsval
        return await clients.old_syn(step.actor, tup[1], header), None, facts

    async def _act_syn_flood(self, step: Step) -> ActResult:
        """COUNT raw SYNs from ports no socket owns, then a bounded wait until the server's
        kernel has dealt with every one: each SYN becomes a request socket (SYN_RECV), or is
        dropped (ListenDrops), or answered with a cookie (SyncookiesSent), nothing else. Fact
        ``syn_recv`` is the number of request sockets on the port as the table then shows."""
        server = self._server_address(step)
        count = int(step.args.get("count", 10))
        requests_before = await self._syn_recv(server.port)
        counters_before = await self._fate_counters()
        seqs = [secrets.randbits(32) for _ in range(count)]
        outcome, ports = await self.clients.syn_flood(step.actor, server, seqs)
        if outcome != "ok":
            return outcome, None, {"sent": 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + step.timeout
        while True:
            requests = await self._syn_recv(server.port)
            counters = await self._fate_counters()
            dealt = (requests if requests is not None else 0) - (requests_before or 0)
            dealt += sum(counters[k] - counters_before[k] for k in SYN_FATES)
            if (requests is not None and dealt >= count) or loop.time() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
        return "ok", None, {"sent": len(ports), "syn_recv": requests}

    async def _syn_recv(self, port: int) -> int | None:
        """Request sockets (SYN_RECV) on the server's ``port``, as ss counts them (else the
        first source); None while the sources disagree."""
        table = await self.server.snapshot([port])
        counts = {
            source: sum(
                1 for r in records if r.state is TcpState.SYN_RECV and r.local.port == port
            )
            for source, records in table.items()
        }
        if len(set(counts.values())) > 1:
            return None
        return counts.get("ss", next(iter(counts.values()), 0))

    async def _fate_counters(self) -> dict[str, int]:
        counters = await self._side_for(SERVER).ns_op("counters", {})
        assert isinstance(counters, dict)
        return {key: int(counters.get(key, 0)) for key in SYN_FATES}

    async def _act_forge(self, step: Step) -> ActResult:
        flags = str(step.args.get("flags", "RST"))
        outcome, facts = await self.clients.forge(
            step.actor,
            flags,
            int(step.args.get("offset", 0)),
            int(step.args.get("count", 1)),
            step.timeout,
        )
        ends = self.clients.tuple_of(step.actor)
        if outcome == "ok" and ends is not None:
            key = (str(ends[0]), flags, facts["seq"])
            self._forged[key] = self._forged.get(key, 0) + facts["sent"]
        return outcome, None, dict(facts)

    # -- observation ------------------------------------------------------------------------

    def _tuples(self) -> dict[str, tuple[str, tuple[Address, Address | None] | None]]:
        """Each side: which end's table it is read from, and its 4-tuple (None: no socket)."""
        host = self.server.host
        tuples: dict[str, tuple[str, tuple[Address, Address | None] | None]] = {}
        for slot in self.lab.ports:
            bound = self._bound.get(slot, host)
            tuples[listener_side(slot)] = (SERVER, (Address(bound, self.ports[slot]), None))
        for name in self.lab.clients:
            tup = self.clients.tuple_of(name)
            if tup is None:
                tuples[name] = (CLIENT, None)
                tuples[server_side(name)] = (SERVER, None)
            else:
                local, remote = tup
                tuples[name] = (CLIENT, (local, remote))
                tuples[server_side(name)] = (SERVER, (remote, local))
        return tuples

    async def _snapshot(self, *, fast: bool = False) -> dict[str, Snapshot]:
        ports = sorted(set(self.ports.values()))
        if self.shared_table:
            table = await self.server.snapshot(ports, fast=fast)
            return {SERVER: table, CLIENT: table}
        server_table, client_table = await asyncio.gather(
            self.server.snapshot(ports, fast=fast), self.clients.snapshot(ports, fast=fast)
        )
        return {SERVER: server_table, CLIENT: client_table}

    def _observe(
        self, tables: Mapping[str, Snapshot], sides: Sequence[str]
    ) -> dict[str, Reconciled | None]:
        tuples = self._tuples()
        out: dict[str, Reconciled | None] = {}
        for side in sides:
            end, tup = tuples[side]
            out[side] = None if tup is None else reconcile(tables[end], tup[0], tup[1])
        return out

    def _sides_to_show(self, step: Step, observed: Mapping[str, Reconciled | None]) -> list[str]:
        shown = []
        for side in self.lab.sides():
            r = observed.get(side)
            if side in step.expect or (r is not None and r.state is not None):
                shown.append(side)
        return shown

    async def _settle(
        self, step: Step
    ) -> tuple[dict[str, Reconciled | None], dict[str, Reconciled | None], float]:
        """Poll until the expected states hold (for ``step.stay`` s) or the timeout passes.

        The result is the last observation: on success one where every expectation held, on a
        hold that broke the observation that broke it, on timeout the last one read. Returned
        as the sides to show, every side, and the monotonic time of that read.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + step.timeout
        all_sides = self.lab.sides()
        held_since: float | None = None
        while True:
            # Poll with the fast observer (netlink, a fraction of a millisecond); once it sees
            # the expected states, confirm with every observer (ss and psutil side by side),
            # which is what the report shows. Without a fast observer both reads are the same.
            fast_match = False
            if step.expect and loop.time() < deadline:
                quick = self._observe(await self._snapshot(fast=True), all_sides)
                fast_match = self._states_match(step, quick)
            if step.expect and not fast_match and loop.time() < deadline and held_since is None:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            tables = await self._snapshot()
            now, read_at = loop.time(), time.monotonic()
            observed = self._observe(tables, all_sides)
            matched = self._states_match(step, observed)
            if matched and held_since is None:
                held_since = now
            done = (
                (matched and held_since is not None and now - held_since >= step.stay)
                or (not matched and held_since is not None)  # it held, then broke
                or (not matched and now >= deadline)
            )
            if done:
                shown = {side: observed[side] for side in self._sides_to_show(step, observed)}
                return shown, observed, read_at
            await asyncio.sleep(POLL_INTERVAL if held_since is None else STAY_POLL_INTERVAL)

    @staticmethod
    def _states_match(step: Step, observed: Mapping[str, Reconciled | None]) -> bool:
        for side, expected in step.expect.items():
            r = observed.get(side)
            state = None if r is None else r.state
            if state != expected or (r is not None and not r.agree):
                return False
        return True

    @staticmethod
    def _mismatches(
        step: Step,
        observed: Mapping[str, Reconciled | None],
        outcome: str | None,
        data: str | None,
        facts: Mapping[str, object],
    ) -> list[str]:
        problems: list[str] = []
        for side, expected in step.expect.items():
            r = observed.get(side)
            state = None if r is None else r.state
            want = expected.name if expected is not None else ABSENT
            got = state.name if state is not None else ABSENT
            if state != expected:
                problems.append(f"{side}: expected {want}, kernel says {got}")
            elif r is not None and not r.agree:
                problems.append(f"{side}: sources disagree ({r.note})")
        if step.outcome is not None:
            if outcome != step.outcome:
                problems.append(f"outcome: expected {step.outcome}, got {outcome}")
        elif outcome is not None and outcome not in NON_ERROR_OUTCOMES:
            problems.append(f"outcome: {outcome} ({UNEXPECTED_ERROR})")
        if step.data is not None and data != step.data:
            problems.append(f"data: expected {step.data!r}, got {data!r}")
        for key, want_value in step.facts.items():
            if not fact_matches(want_value, facts.get(key)):
                problems.append(f"{key}: expected {want_value!r}, got {facts.get(key)!r}")
        return problems


ActHandler = Callable[[LabRun, Step], Awaitable[ActResult]]
ACTIONS_TABLE: Mapping[str, ActHandler] = {
    "listen": LabRun._act_listen,
    "accept": LabRun._act_accept,
    "unlisten": LabRun._act_unlisten,
    "connect": LabRun._act_connect,
    **dict.fromkeys(STREAM_ACTIONS, LabRun._act_stream),
    "observe": LabRun._act_observe,
    "sysctl": LabRun._act_sysctl,
    "counters": LabRun._act_counters,
    "churn": LabRun._act_churn,
    "self_connect": LabRun._act_self_connect,
    "stale_syn": LabRun._act_stale_syn,
    "reconnect": LabRun._act_reconnect,
    "old_syn": LabRun._act_old_syn,
    "syn_flood": LabRun._act_syn_flood,
    "forge": LabRun._act_forge,
    "close_both": LabRun._act_close_both,
}
"""Every action a lab file may name (``spec.model.ACTIONS``, same keys: tested) -> the method
that performs it. The stream actions travel to the agent as its ``stream_action`` verb."""


def _port_of(endpoint: object) -> int:
    return int(str(endpoint).rsplit(":", 1)[1])


def _host_of(endpoint: object) -> str:
    """The address of ``host:port`` or ``[v6-host]:port`` (as ``Address`` prints them)."""
    return str(endpoint).rsplit(":", 1)[0].removeprefix("[").removesuffix("]")


def fact_matches(want: object, got: object) -> bool:
    """Compare a fact: equal, or a comparison string like ``">=1"`` against a number."""
    if isinstance(want, str):
        match = COMPARISON_RE.match(want)
        if match and isinstance(got, int | float) and not isinstance(got, bool):
            op, number = match.group(1), int(match.group(2))
            return {
                ">=": got >= number,
                "<=": got <= number,
                ">": got > number,
                "<": got < number,
                "==": got == number,
            }[op]
    return want == got


def _side_observation(side: str, r: Reconciled | None) -> SideObservation:
    if r is None:
        return SideObservation(
            side=side,
            state=ABSENT,
            local=None,
            remote=None,
            sources={},
            agree=True,
            note="no socket yet",
        )
    timer = None
    if r.timer is not None:
        timer = {"name": r.timer.name, "remaining": r.timer.remaining, "count": r.timer.count}
    return SideObservation(
        side=side,
        state=r.state.name if r.state is not None else ABSENT,
        local=str(r.local),
        remote=str(r.remote) if r.remote is not None else None,
        sources={name: view.raw for name, view in r.sources.items()},
        agree=r.agree,
        timer=timer,
        pid=r.pid,
        note=r.note,
        mapped=r.local.mapped,
    )
