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
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from handshake_lab.errors import NetworkError
from handshake_lab.lab.model import (
    ABSENT,
    MAIN_PORT,
    Lab,
    Step,
    listener_side,
    server_side,
)
from handshake_lab.lab.report import (
    Event,
    LabResult,
    LabStarted,
    SideObservation,
    StepReport,
)
from handshake_lab.net.endpoints import Client, EchoServer, Stream
from handshake_lab.net.loops import loop_version
from handshake_lab.observe.base import Address, Observer, SocketRecord
from handshake_lab.observe.reconcile import Reconciled, reconcile
from handshake_lab.observe.versions import base_versions

POLL_INTERVAL = 0.005
STAY_POLL_INTERVAL = 0.05
NON_ERROR_OUTCOMES = frozenset({"ok", "pending", "data", "EOF"})

Emit = Callable[[Event], None]
Pause = Callable[[Step], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RunOptions:
    lang: str = "en"
    loop: str = "asyncio"
    topology: str = "loopback"
    host: str = "127.0.0.1"
    port: int | None = None


def free_port(host: str) -> int:
    """A port nothing is bound to right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear line, if ``--port`` cannot be used."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except PermissionError as exc:
            raise NetworkError(
                f"port {port} needs privileges to bind on {host}; choose a port above 1023"
            ) from exc
        except OSError as exc:
            raise NetworkError(
                f"port {port} is in use on {host} (a listener, or a TIME_WAIT left by an earlier "
                "run for up to 60 s); choose another --port or omit it"
            ) from exc


class LabRun:
    """One run of one lab. Create, then ``await run()`` inside the chosen event loop."""

    def __init__(
        self,
        lab: Lab,
        options: RunOptions,
        observers: Sequence[Observer],
        emit: Emit,
        pause: Pause | None = None,
    ) -> None:
        self.lab = lab
        self.options = options
        self.observers = list(observers)
        self.emit = emit
        self.pause = pause
        self.ports: dict[str, int] = {}
        self.server = EchoServer(options.host, echo=lab.echo)
        self.clients = {name: Client(name, options.host) for name in lab.clients}
        self.client_slot: dict[str, str] = {}
        self.used_listeners: set[str] = set()

    # -- ports ------------------------------------------------------------------------------

    def _allocate_ports(self) -> None:
        host = self.options.host
        if self.options.port is not None:
            check_port_free(host, self.options.port)
            self.ports[MAIN_PORT] = self.options.port
        for slot in self.lab.ports:
            if slot in self.ports:
                continue
            port = free_port(host)
            while port in self.ports.values():
                port = free_port(host)
            self.ports[slot] = port

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> LabResult:
        started = time.monotonic()
        self._allocate_ports()
        lab = self.lab
        lang = self.options.lang
        versions = base_versions()
        versions["loop"] = f"{self.options.loop} {loop_version(self.options.loop)}"
        self.emit(
            LabStarted(
                name=lab.name,
                title=lab.title.get(lang),
                summary=lab.summary.get(lang),
                intro=lab.intro.get(lang) if lab.intro else None,
                loop=self.options.loop,
                topology=self.options.topology,
                lang=lang,
                host=self.options.host,
                ports=dict(self.ports),
                observers=[o.name for o in self.observers],
                steps=len(lab.steps),
                versions=versions,
                path=str(lab.path),
            )
        )
        reports: list[StepReport] = []
        try:
            for step in lab.steps:
                if self.pause is not None:
                    await self.pause(step)
                report = await self._run_step(step)
                reports.append(report)
                self.emit(report)
        finally:
            await self._cleanup()
        disagreed = [r.id for r in reports if not r.agrees]
        result = LabResult(
            name=lab.name,
            passed=not disagreed,
            steps=len(reports),
            agreed=len(reports) - len(disagreed),
            disagreed=len(disagreed),
            duration_s=round(time.monotonic() - started, 3),
            settle_s=round(sum(r.settle_ms for r in reports) / 1000, 3),
            disagreed_steps=disagreed,
        )
        self.emit(result)
        return result

    async def _cleanup(self) -> None:
        # Shielded and bounded: on Ctrl-C the sockets must still be released, and a stuck
        # close must not keep the user waiting.
        async def release() -> None:
            for client in self.clients.values():
                await client.close_all()
            await self.server.close_all()

        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(asyncio.shield(release()), 5.0)

    async def _run_step(self, step: Step) -> StepReport:
        t0 = time.monotonic()
        outcome, data, facts = await self._act(step)
        t1 = time.monotonic()
        observed = await self._settle(step)
        t2 = time.monotonic()
        mismatches = self._mismatches(step, observed, outcome, data, facts)
        return StepReport(
            index=step.index,
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
            facts=facts,
            expected_facts=dict(step.facts),
            agrees=not mismatches,
            mismatches=mismatches,
            explain_key=f"{self.lab.name}.{step.explain_key}",
            explanation=step.explain.get(self.options.lang),
            action_ms=round((t1 - t0) * 1000, 3),
            settle_ms=round((t2 - t1) * 1000, 3),
            total_steps=len(self.lab.steps),
        )

    # -- actions ----------------------------------------------------------------------------

    async def _act(self, step: Step) -> tuple[str | None, str | None, dict[str, object]]:
        """Perform the step's action. Returns (outcome, received text, facts)."""
        args = step.args
        action = step.action
        if action == "observe":
            return None, None, {}
        if step.actor == "server":
            slot = str(args.get("port", MAIN_PORT))
            if action == "listen":
                reuse = args.get("reuse_address", False)
                outcome, facts = await self.server.listen(
                    slot,
                    self.ports[slot],
                    backlog=int(args.get("backlog", 16)),
                    reuse_address=None if reuse == "default" else bool(reuse),
                    accept=bool(args.get("accept", True)),
                )
                if outcome == "ok":
                    self.used_listeners.add(slot)
                return outcome, None, dict(facts)
            if action == "accept":
                return await self.server.accept(slot), None, {}
            if action == "unlisten":
                return await self.server.unlisten(slot), None, {}
            stream = await self._server_stream(str(args.get("conn", "client")), step.timeout)
        else:
            client = self.clients[step.actor]
            if action == "connect":
                slot = str(args.get("port", MAIN_PORT))
                self.client_slot[client.name] = slot
                outcome = await client.connect(
                    self.ports[slot], wait=bool(args.get("wait", True)), timeout=step.timeout
                )
                return outcome, None, {}
            if action == "close" and client.stream is None and client.sock is not None:
                # Closing a socket whose connect is still pending (SYN_SENT).
                await client.close_all()
                return "ok", None, {}
            outcome = await client.wait_connected(step.timeout)
            stream = client.stream
            if stream is None:
                return (outcome if outcome not in NON_ERROR_OUTCOMES else "ENOTCONN"), None, {}
        if stream is None:
            return "ENOTCONN", None, {}
        return await _stream_action(stream, action, args, step.timeout)

    async def _server_stream(self, client_name: str, timeout: float) -> Stream | None:
        client = self.clients.get(client_name)
        if client is None or client.local is None:
            return None
        return await self.server.connection(client.local, timeout)

    # -- observation ------------------------------------------------------------------------

    def _tuples(self) -> dict[str, tuple[Address, Address | None] | None]:
        """Each side's 4-tuple as far as we know it (None: no socket yet)."""
        host = self.options.host
        tuples: dict[str, tuple[Address, Address | None] | None] = {}
        for slot in self.lab.ports:
            tuples[listener_side(slot)] = (Address(host, self.ports[slot]), None)
        for name, client in self.clients.items():
            if client.local is not None and client.remote is not None:
                tuples[name] = (client.local, client.remote)
                tuples[server_side(name)] = (client.remote, client.local)
            else:
                tuples[name] = None
                tuples[server_side(name)] = None
        return tuples

    def _snapshot(self) -> dict[str, list[SocketRecord]]:
        ports = sorted(set(self.ports.values()))
        return {o.name: o.snapshot(ports) for o in self.observers}

    def _observe(
        self, snapshots: Mapping[str, Sequence[SocketRecord]], sides: Sequence[str]
    ) -> dict[str, Reconciled | None]:
        tuples = self._tuples()
        out: dict[str, Reconciled | None] = {}
        for side in sides:
            tup = tuples.get(side)
            out[side] = None if tup is None else reconcile(snapshots, tup[0], tup[1])
        return out

    def _sides_to_show(self, step: Step, observed: Mapping[str, Reconciled | None]) -> list[str]:
        shown = []
        for side in self.lab.sides():
            r = observed.get(side)
            if side in step.expect or (r is not None and r.state is not None):
                shown.append(side)
        return shown

    async def _settle(self, step: Step) -> dict[str, Reconciled | None]:
        """Poll until the expected states hold (for ``step.stay`` s) or the timeout passes.

        The result is the last observation: on success one where every expectation held, on a
        hold that broke the observation that broke it, on timeout the last one read.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + step.timeout
        all_sides = self.lab.sides()
        held_since: float | None = None
        while True:
            snapshots = await asyncio.to_thread(self._snapshot)
            now = loop.time()
            observed = self._observe(snapshots, all_sides)
            matched = self._states_match(step, observed)
            if matched and held_since is None:
                held_since = now
            done = (
                (matched and held_since is not None and now - held_since >= step.stay)
                or (not matched and held_since is not None)  # it held, then broke
                or (not matched and now >= deadline)
            )
            if done:
                return {side: observed[side] for side in self._sides_to_show(step, observed)}
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
            problems.append(f"outcome: {outcome} (the lab did not expect an error)")
        if step.data is not None and data != step.data:
            problems.append(f"data: expected {step.data!r}, got {data!r}")
        for key, want_value in step.facts.items():
            if facts.get(key) != want_value:
                problems.append(f"{key}: expected {want_value!r}, got {facts.get(key)!r}")
        return problems


async def _stream_action(
    stream: Stream, action: str, args: Mapping[str, object], timeout: float
) -> tuple[str | None, str | None, dict[str, object]]:
    if action == "send":
        return await stream.send(str(args["data"]).encode()), None, {}
    if action == "recv":
        outcome, data = await stream.wait_input(timeout)
        text = data.decode("utf-8", errors="replace") if outcome == "data" else None
        return outcome, text, {}
    if action == "send_eof":
        return stream.send_eof(), None, {}
    if action == "close":
        return await stream.close(timeout), None, {}
    if action == "abort":
        return await stream.abort(), None, {}
    raise AssertionError(f"unhandled action {action}")  # the loader rejects unknown actions


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
    )
