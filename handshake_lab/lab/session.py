"""One run of one lab, start to end: the call the CLI (and anything else) makes.

``execute(request, emit)`` places the two ends (``placement.place``), starts the evidence
(capture, transition stream) where the placement says segments cross, runs the lab in the
chosen event loop, writes the pcap if asked, removes whatever it created, and returns the run
record. SIGTERM, SIGHUP and SIGQUIT cancel the run like Ctrl-C does, so sockets and kernel
objects are released either way; an interrupted run raises ``Interrupted``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from handshake_lab.capture.pcap import write_pcap
from handshake_lab.errors import Interrupted
from handshake_lab.lab.evidence import evidence_for
from handshake_lab.lab.quiz import Quiz
from handshake_lab.lab.runner import Ask, Emit, LabRun, Pause, RunOptions, StepStarted
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.defaults import default_observers
from handshake_lab.outputs import write_output
from handshake_lab.placement import Topology
from handshake_lab.placement.place import ip_for, place, step_set
from handshake_lab.record.run import Recorder, RunRecord
from handshake_lab.signals import TERMINATING, sigterm_as_interrupt
from handshake_lab.spec.model import Lab
from handshake_lab.topo.netem import Link


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything a run needs, parsed and checked at the edge."""

    lab: Lab
    topology: Topology
    loop: str = "asyncio"
    port: int | None = None
    peer: str | None = None
    token_file: Path | None = None
    capture: bool | None = None
    trace: bool | None = None
    pcap: Path | None = None
    quiz: Quiz | None = None
    ip: int = 4
    """The IP version of the lab's sockets: 4 (127.0.0.1, 198.18.0.0/24), 6 (::1,
    2001:db8:198:18::/64), or ``spec.model.DUAL_STACK`` for a lab of both (``ip = "dual"``)."""
    link: Link | None = None
    """``--delay``/``--loss``: the wire between the namespaces (``topo.netem``); None: as is."""


def execute(
    request: RunRequest,
    emit: Emit,
    pause: Pause | None = None,
    ask: Ask | None = None,
    started: StepStarted | None = None,
) -> RunRecord:
    """Run the lab; every event goes to ``emit`` as it happens; the record is returned.
    ``started`` is told as each step's action begins (a progress line)."""
    return drive(request, emit, LabRun.run, pause=pause, ask=ask, started=started)


Body = Callable[[LabRun], Awaitable[object]]
"""What ``drive`` does with the runner inside the event loop: ``LabRun.run`` for a lab; a
``play`` session feeds it steps one at a time (``start``, ``run_step``..., ``finish``)."""


def drive(
    request: RunRequest,
    emit: Emit,
    body: Body,
    *,
    pause: Pause | None = None,
    ask: Ask | None = None,
    started: StepStarted | None = None,
) -> RunRecord:
    """Place the ends, start the evidence, run ``body(runner)`` in the chosen loop with the
    terminating signals cancelling it, remove everything, and return the record."""
    factory = loop_factory(request.loop)
    recorder = Recorder(emit)
    ip = ip_for(request.lab, request.ip)  # both families for a dual lab
    # Outside the event loop (building and removing namespaces) SIGTERM, SIGHUP and SIGQUIT
    # raise KeyboardInterrupt, so the same cleanup runs as for Ctrl-C.
    with (
        sigterm_as_interrupt(),
        place(
            request.topology,
            request.lab,
            partial(default_observers, ip),
            loop=request.loop,
            peer=request.peer,
            token_file=request.token_file,
            ip=ip,
            link=request.link,
        ) as ends,
    ):
        evidence = evidence_for(
            ends, capture=request.capture, trace=request.trace, pcap=request.pcap is not None
        )
        options = RunOptions(
            loop=request.loop,
            topology=request.topology,
            port=request.port,
            host=ends.host,
            host6=ends.host6,
            step_set=step_set(request.topology),
            link=request.link.record() if request.link is not None else {},
        )
        runner = LabRun(
            request.lab,
            options,
            ends.observers,
            recorder,
            pause,
            server=ends.server,
            clients=ends.clients,
            evidence=evidence,
            shared_table=ends.shared_table or None,
            quiz=request.quiz,
            ask=ask,
            started=started,
        )

        stopped_by: list[int] = []

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None

            def stop(signum: int) -> None:
                stopped_by.append(signum)
                task.cancel()

            running = asyncio.get_running_loop()
            # SIGINT too, through the loop: asyncio.Runner's own Ctrl-C handler cancels the
            # task from inside the signal handler, which can land between a callback's "is
            # the future done?" and its set_result() (seen: InvalidStateError in
            # _sock_connect_cb, a traceback on Ctrl-C). A loop handler runs between callbacks.
            for signum in (signal.SIGINT, *TERMINATING):  # SIGHUP, SIGQUIT: terminal, Ctrl-\
                running.add_signal_handler(signum, stop, signum)
            try:
                await body(runner)
            finally:
                for signum in (signal.SIGINT, *TERMINATING):
                    running.remove_signal_handler(signum)

        try:
            with asyncio.Runner(loop_factory=factory) as r:
                r.run(main())
        except asyncio.CancelledError as exc:
            how = "interrupted" if stopped_by[:1] == [signal.SIGINT] else "terminated"
            raise Interrupted(f"{how}; every socket was closed") from exc
        finally:
            # The runner stops the capture and the trace in its cleanup; a second Ctrl-C can
            # cut that short, so stop them again here, outside the loop (it is idempotent).
            if evidence is not None:
                evidence.stop()
        if evidence is not None and evidence.packets and request.pcap is not None:
            packets = evidence.packets
            write_output(request.pcap, lambda stream: write_pcap(stream, packets))
    return recorder.record()
