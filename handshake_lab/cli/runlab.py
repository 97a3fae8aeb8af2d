"""The ``run`` command's one function: load, pick observers and loop, run, return a status."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from handshake_lab import tools
from handshake_lab.cli.signals import TERMINATING, sigterm_as_interrupt
from handshake_lab.errors import ExitStatus, Interrupted, MissingDependencyError, UsageError
from handshake_lab.i18n.labels import label
from handshake_lab.lab.evidence import Evidence
from handshake_lab.lab.quiz import Question, Quiz, normalise_state_answer
from handshake_lab.lab.runner import Ask, Emit, LabRun, Pause, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.base import Observer
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.outputs import check_output, write_output
from handshake_lab.placement.build import Placed, placed, step_topology
from handshake_lab.render.jsonl import JsonLinesRenderer
from handshake_lab.render.table import TableRenderer, make_console
from handshake_lab.spec.loader import find_lab
from handshake_lab.spec.model import Lab, Step


def default_observers() -> list[Observer]:
    """ss and psutil side by side, as the labs promise. Fails early if either is missing."""
    # Every lab socket is IPv4 (127.0.0.1, 198.18.0.0/15): read IPv4 only, half the cost.
    observers: list[Observer] = [SsObserver(ipv4_only=True), PsutilObserver(kind="tcp4")]
    for observer in observers:
        observer.snapshot([])  # raises ObserverError with an install hint if unusable
    return observers


def make_pause(lang: str) -> Pause:
    async def pause(step: Step) -> None:
        prompt = f"-- {label('press_enter', lang)} {step.index} ({step.actor}: {step.action}) "
        sys.stderr.write(prompt)
        sys.stderr.flush()
        # In a thread, so the event loop keeps serving the sockets while the user reads.
        await asyncio.to_thread(sys.stdin.readline)

    return pause


@contextmanager
def place(
    topology: str, lab: Lab, loop: str, peer: str | None, token_file: Path | None
) -> Iterator[Placed]:
    """The lab's two ends: here (loopback, namespaces) or the server at an agent (--peer)."""
    if peer is None:
        with placed(topology, lab, default_observers, loop=loop) as ends:
            yield ends
        return
    from handshake_lab.agent.token import TokenError, load_token  # noqa: PLC0415
    from handshake_lab.cli.agent_cmd import remote_sides  # noqa: PLC0415

    token = load_token(token_file)
    if token is None:
        raise TokenError("--peer needs the agent's token: set HSLAB_AGENT_TOKEN or --token-file")
    server, clients = remote_sides(peer, token, lab)
    yield Placed("remote", clients.observers, server=server, clients=clients, host=server.host)


def make_ask(lang: str) -> Ask:
    """Ask each question on the terminal; unknown state spellings are asked again."""

    async def ask(step: Step, questions: list[Question]) -> None:
        sys.stderr.write(f"\n-- predict step {step.index}: {step.actor}: {step.action}\n")
        for q in questions:
            while True:
                sys.stderr.write(f"   {q.text} ")
                sys.stderr.flush()
                line = (await asyncio.to_thread(sys.stdin.readline)).strip()
                if q.kind != "state" or normalise_state_answer(line) is not None:
                    q.answer = line
                    break
                sys.stderr.write("   (a state name such as SYN_SENT, FIN-WAIT-2 or ABSENT)\n")

    del lang
    return ask


def make_evidence(
    ends: Placed, *, capture: bool | None, trace: bool | None, pcap: Path | None
) -> Evidence | None:
    """Capture and trace when asked, or by default when the machine allows it."""
    want_capture = capture if capture is not None else True
    want_trace = trace if trace is not None else True
    if pcap is not None:
        want_capture = True
    if not (want_capture or want_trace):
        return None
    from handshake_lab.lab.evidence import Evidence  # noqa: PLC0415
    from handshake_lab.topo.registry import new_run_id  # noqa: PLC0415

    run_id = ends.details.get("run_id") or new_run_id()
    if ends.topology in {"netns", "netns-agent"}:
        from handshake_lab.capture.sniffer import default_socket_factory  # noqa: PLC0415
        from handshake_lab.topo.netns import in_netns  # noqa: PLC0415

        client_ns = ends.details["client_ns"]

        def factory() -> object:
            with in_netns(client_ns):
                return default_socket_factory()

        return Evidence(
            capture=want_capture,
            trace=want_trace,
            run_id=run_id,
            interface=ends.details["client_veth"],
            socket_factory=factory,
            hosts={ends.host, ends.details["client_addr"]},
            require_capture=pcap is not None or capture is True,
        )
    return Evidence(
        capture=want_capture,
        trace=want_trace,
        run_id=run_id,
        interface="lo",
        hosts={ends.host},
        require_capture=pcap is not None or capture is True,
    )


def isolate_without_root(
    needs_netns: bool, files: list[Path | None], arguments: list[str] | None
) -> None:
    """Namespaces without root: rerun this command in a private user namespace (see userns).

    In the rerun process, ``prepare`` gives it a private ``/run`` first. Called in-process (no
    command line recorded: tests, library use) nothing is rerun, and building the topology
    fails later with the usual "needs root" reason.
    """
    from handshake_lab.topo import userns  # noqa: PLC0415

    if userns.is_userns_child():
        if needs_netns:
            userns.prepare()
        return
    if arguments is None or not userns.wants_userns(
        euid=os.geteuid(), environ=os.environ, needs_netns=needs_netns, in_child=False
    ):
        return
    from handshake_lab.topo.caps import user_namespaces_work  # noqa: PLC0415

    works, detail = user_namespaces_work()
    if not works:
        if os.geteuid() == 0:
            raise MissingDependencyError(f"{userns.FORCE_ENV}=1 but {detail}")
        return  # the topology reports what is missing, as before
    userns.refuse_private_paths(files)
    sys.stderr.write(
        "handshake-lab: not root: running in a private user namespace (unshare -rn); "
        "no transition stream there (tracefs needs real root)\n"
        if os.geteuid() != 0
        else f"handshake-lab: {userns.FORCE_ENV}=1: running in a private user namespace\n"
    )
    userns.reexec(arguments)


def run_lab_command(
    name: str,
    *,
    lang: str,
    loop: str,
    topology: str | None,
    json_out: bool,
    step: bool,
    port: int | None,
    pcap: Path | None = None,
    capture: bool | None = None,
    trace: bool | None = None,
    quiz: bool = False,
    answers: Path | None = None,
    peer: str | None = None,
    token_file: Path | None = None,
    argv: list[str] | None = None,
) -> ExitStatus:
    lab = find_lab(name)
    if pcap is not None:
        check_output(pcap)  # a path that cannot be written fails now, not after the last step
    if peer is not None and topology is not None:
        raise UsageError("--peer and --topology exclude each other: the agent is the server")
    the_quiz: Quiz | None = None
    if quiz or answers is not None:
        if answers is None and not sys.stdin.isatty():
            raise UsageError("--quiz needs a terminal to ask on, or --answers FILE")
        the_quiz = Quiz(Quiz.load_answers(answers) if answers is not None else None)
    chosen = "remote" if peer is not None else topology or lab.topologies[0]
    if step_topology(chosen) not in lab.topologies:
        where = "--peer" if peer is not None else f"--topology {chosen}"
        raise UsageError(
            f"lab {lab.name} cannot run with {where}: it runs with --topology "
            + " or ".join(lab.topologies)
        )
    holds = any(s.holds for s in lab.steps_for(step_topology(chosen)))
    for tool in tools.needed_for(step_topology(chosen), holds=holds):
        tools.require(tool)  # refused now, with its package, not in the middle of the run
    isolate_without_root(
        step_topology(chosen) == "netns", [lab.path, pcap, answers, token_file], argv
    )
    factory = loop_factory(loop)
    default_observers()  # fail early, before building anything, if ss or psutil is unusable
    renderer = None if json_out else TableRenderer(make_console(), lang)
    emit: Emit = JsonLinesRenderer() if renderer is None else renderer
    pause = make_pause(lang) if step and sys.stdin.isatty() else None
    with sigterm_as_interrupt(), place(chosen, lab, loop, peer, token_file) as ends:
        evidence = make_evidence(ends, capture=capture, trace=trace, pcap=pcap)
        options = RunOptions(lang=lang, loop=loop, topology=chosen, port=port, host=ends.host)
        runner = LabRun(
            lab,
            options,
            ends.observers,
            emit,
            pause,
            server=ends.server,
            clients=ends.clients,
            evidence=evidence,
            shared_table=ends.shared_table or None,
            quiz=the_quiz,
            ask=make_ask(lang) if the_quiz is not None and answers is None else None,
        )

        async def main() -> bool:
            # SIGTERM cancels the run like Ctrl-C does, so sockets are released either way.
            task = asyncio.current_task()
            assert task is not None
            running = asyncio.get_running_loop()
            for signum in TERMINATING:  # SIGHUP, SIGQUIT too: a closed terminal, Ctrl-\
                running.add_signal_handler(signum, task.cancel)
            try:
                result = await runner.run()
            finally:
                for signum in TERMINATING:
                    running.remove_signal_handler(signum)
            return result.passed

        try:
            with asyncio.Runner(loop_factory=factory) as r:
                passed = r.run(main())
        except asyncio.CancelledError as exc:
            raise Interrupted("terminated; every socket was closed") from exc
        finally:
            # The runner stops the capture and the trace in its cleanup; a second Ctrl-C can
            # cut that short, so stop them again here, outside the loop (it is idempotent).
            if evidence is not None:
                evidence.stop()
        if evidence is not None and evidence.packets:
            if pcap is not None:
                from handshake_lab.capture.pcap import write_pcap  # noqa: PLC0415

                packets = evidence.packets
                write_output(pcap, lambda stream: write_pcap(stream, packets))
            if renderer is not None:
                renderer.ladders(evidence.packets, evidence.events)
    if not passed:
        return ExitStatus.KERNEL_DISAGREED
    if the_quiz is not None and the_quiz.summary()["correct"] < the_quiz.summary()["asked"]:
        return ExitStatus.QUIZ_WRONG
    return ExitStatus.OK
