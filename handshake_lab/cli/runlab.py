"""The ``run`` and ``show`` commands: options -> typed request -> one call -> render -> exit.

Everything a run does lives below the CLI (``lab.session.execute``); this module only parses
and checks what the user typed, asks on the terminal (``--step``, ``--quiz``), picks the
renderers and turns the run record's verdict into the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import webbrowser
from pathlib import Path

from handshake_lab import tools
from handshake_lab.cli.events_out import EventOutput
from handshake_lab.errors import ExitStatus, MissingDependencyError, UsageError
from handshake_lab.i18n.labels import label
from handshake_lab.lab.quiz import Question, Quiz, normalise_state_answer
from handshake_lab.lab.runner import Ask, Pause
from handshake_lab.lab.session import RunRequest, execute
from handshake_lab.observe.defaults import default_observers
from handshake_lab.outputs import check_output, write_output
from handshake_lab.placement import Topology
from handshake_lab.placement.place import dual_refusal, link_refusal, peer_refusal, step_set
from handshake_lab.record.codec import read_run
from handshake_lab.record.run import RunRecord
from handshake_lab.render.html import render_html
from handshake_lab.render.live import LiveView
from handshake_lab.render.table import TableRenderer
from handshake_lab.render.text import make_console
from handshake_lab.signals import sigterm_as_interrupt
from handshake_lab.spec.loader import find_lab
from handshake_lab.spec.model import DUAL_STACK, STEP_SETS, Lab, Step
from handshake_lab.topo import netem, userns
from handshake_lab.topo.caps import user_namespaces_work
from handshake_lab.topo.vmhold import refusal as vm_refusal


def make_pause(lang: str) -> Pause:
    async def pause(step: Step) -> None:
        prompt = f"-- {label('press_enter', lang)} {step.index} ({step.actor}: {step.action}) "
        sys.stderr.write(prompt)
        sys.stderr.flush()
        # In a thread, so the event loop keeps serving the sockets while the user reads.
        await asyncio.to_thread(sys.stdin.readline)

    return pause


def make_ask(lang: str) -> Ask:
    """Ask each question on the terminal; unknown state spellings are asked again."""

    async def ask(step: Step, questions: list[Question]) -> None:
        head = label("q_predict", lang).format(i=step.index, actor=step.actor, action=step.action)
        sys.stderr.write(f"\n{head}\n")
        for q in questions:
            while True:
                sys.stderr.write(f"   {q.shown(lang)} ")
                sys.stderr.flush()
                line = (await asyncio.to_thread(sys.stdin.readline)).strip()
                if q.kind != "state" or normalise_state_answer(line) is not None:
                    q.answer = line
                    break
                sys.stderr.write(f"   {label('q_state_hint', lang)}\n")

    return ask


def isolate_without_root(
    needs_netns: bool,
    files: list[Path | None],
    arguments: list[str] | None,
    *,
    browser: bool = False,
    instead: str = "use --html FILE instead",
) -> None:
    """Namespaces without root: rerun this command in a private user namespace (see userns).

    In the rerun process, ``prepare`` gives it a private ``/run`` first. Called in-process (no
    command line recorded: tests, library use) nothing is rerun, and building the topology
    fails later with the usual "needs root" reason.
    """
    if userns.is_userns_child():
        if needs_netns:
            userns.prepare()
        return
    if arguments is None or not userns.wants_userns(
        euid=os.geteuid(), environ=os.environ, needs_netns=needs_netns, in_child=False
    ):
        return
    works, detail = user_namespaces_work()
    if not works:
        if os.geteuid() == 0:
            raise MissingDependencyError(f"{userns.FORCE_ENV}=1 but {detail}")
        return  # the topology reports what is missing, as before
    userns.refuse_private_paths(files)
    if browser:
        # The rerun lives in a private network namespace: its 127.0.0.1 is not the one a
        # browser on this machine reaches, so the live page could never be opened.
        raise UsageError(
            "--browser needs root for a namespace lab (without root the run moves into a "
            f"private network namespace no browser can reach); {instead}"
        )
    sys.stderr.write(
        "handshake-lab: not root: running in a private user namespace (unshare -rn); "
        "no transition stream there (tracefs needs real root)\n"
        if os.geteuid() != 0
        else f"handshake-lab: {userns.FORCE_ENV}=1: running in a private user namespace\n"
    )
    userns.reexec(arguments)


def checked_link(delay: float | None, loss: float | None, topology: Topology) -> netem.Link:
    """``--delay``/``--loss`` as a ``Link``; a usage error (exit 2) where they cannot go
    (loopback, ``--peer``). Whether the kernel has netem is asked later (``need_netem``)."""
    try:
        link = netem.Link(rtt_ms=delay or 0.0, loss_pct=loss or 0.0)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if link.active:
        refusal = link_refusal(topology)
        if refusal is not None:
            raise UsageError(refusal)
    return link


def need_netem(link: netem.Link) -> None:
    """Before anything is built: ``--delay``/``--loss`` need netem (exit 13 without it),
    asked of the kernel in a namespace made for the probe (``topo.netem.probe``)."""
    if link.active:
        netem.require()


def run_lab_command(
    name: str,
    *,
    lang: str,
    loop: str,
    topology: Topology | None,
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
    save: Path | None = None,
    html: Path | None = None,
    browser: bool = False,
    argv: list[str] | None = None,
    ip: int | None = None,
    delay: float | None = None,
    loss: float | None = None,
) -> ExitStatus:
    """``ip``: 4 or 6 as --ip gave it, None when not given (4, or both for a dual lab)."""
    lab = find_lab(name)
    ip = lab_ip(lab, ip)
    for output in (pcap, save, html):
        if output is not None:
            check_output(output)  # a path that cannot be written fails now, not at the end
    if peer is not None and topology is not None:
        raise UsageError("--peer and --topology exclude each other: the agent is the server")
    the_quiz: Quiz | None = None
    if quiz or answers is not None:
        if answers is None and not sys.stdin.isatty():
            raise UsageError("--quiz needs a terminal to ask on, or --answers FILE")
        the_quiz = Quiz(Quiz.load_answers(answers, lab) if answers is not None else None)
    chosen = Topology.REMOTE if peer is not None else topology or Topology(lab.topologies[0])
    if ip == 6 and chosen is Topology.REMOTE:
        raise UsageError("--peer runs on IPv4 only; --ip 6 needs a --topology")
    if ip == DUAL_STACK and chosen in (Topology.REMOTE, Topology.NETNS_AGENT):
        raise UsageError(dual_refusal(lab.name, chosen))
    refused = peer_refusal(lab) if chosen is Topology.REMOTE else None
    if refused is not None:
        raise UsageError(refused)
    link = checked_link(delay, loss, chosen)
    steps_of = step_set(chosen)
    if STEP_SETS[steps_of] not in lab.topologies:
        raise UsageError(
            f"lab {lab.name} cannot run with {chosen.option}: it runs with --topology "
            + " or ".join(lab.topologies)
            + (f" ({vm_refusal()})" if peer is not None else "")  # topo.vmhold
        )
    holds = any(s.holds for s in lab.steps_for(steps_of))
    for tool in tools.needed_for(STEP_SETS[steps_of], holds=holds):
        tools.require(tool)  # refused now, with its package, not in the middle of the run
    need_netem(link)  # before a rerun in a user namespace: one line, not two
    isolate_without_root(
        STEP_SETS[steps_of] == "netns" and chosen is not Topology.REMOTE,
        [lab.path, pcap, answers, token_file, save, html],
        argv,
        browser=browser,
    )
    default_observers(ip)  # fail early, before building anything, if ss or psutil is unusable
    request = RunRequest(
        lab=lab,
        topology=chosen,
        loop=loop,
        port=port,
        peer=peer,
        token_file=token_file,
        capture=capture,
        trace=trace,
        pcap=pcap,
        quiz=the_quiz,
        ip=ip,
        link=link if link.active else None,
    )
    pause = make_pause(lang) if step and sys.stdin.isatty() else None
    live: LiveView | None = None
    try:
        with sigterm_as_interrupt(), EventOutput(lang, json_out, save) as out:
            if browser:
                live = start_live_view(lang, step)
                out.add(live)
                pause = page_pause(live) if step else None
            record = execute(
                request,
                out.emit,
                pause=pause,
                ask=make_ask(lang) if the_quiz is not None and answers is None else None,
                started=out.started,
            )
    finally:
        if live is not None:
            live.close()
    out.ladders(record)
    if html is not None:
        write_html(html, record, lang)
    return record.exit_status()


def lab_ip(lab: Lab, ip: int | None) -> int:
    """The IP version of the run: ``--ip`` (default 4), or both families for a lab that says
    ``ip = "dual"``, whose steps name each socket's family: there ``--ip`` would choose
    nothing, and a record saying "IPv6" of a run that used both would not be true."""
    if not lab.dual:
        return 4 if ip is None else ip
    if ip is not None:
        raise UsageError(
            f"lab {lab.name} uses IPv4 and IPv6 together in every run (its steps name each "
            "socket's family): leave out --ip/-6"
        )
    return DUAL_STACK


VIEWER_WAIT_S = 60.0
"""Without --step, how long ``--browser`` waits for the page to connect before step 1."""


def start_live_view(lang: str, step: bool, *, play: bool = False) -> LiveView:
    """Serve the live page on 127.0.0.1, say where on stderr, open a browser if there is a
    display to show one on; without ``--step``, wait (bounded) for the page to connect, so a
    lab of a second is not over before it is seen. ``play``: the page has the command panel."""
    live = LiveView(lang, step_mode=step, play=play)
    sys.stderr.write(f"handshake-lab: live view at {live.url}\n")
    sys.stderr.flush()
    if any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")):
        with contextlib.suppress(webbrowser.Error):  # the URL is on stderr anyway
            webbrowser.open(live.url)
    if not step and not live.wait_for_viewer(VIEWER_WAIT_S):
        sys.stderr.write("handshake-lab: no page connected; running the lab anyway\n")
    return live


def page_pause(live: LiveView) -> Pause:
    """``--step`` with ``--browser``: the page's button runs the next step (said on stderr)."""

    async def pause(step: Step) -> None:
        sys.stderr.write(
            f"-- step {step.index} ({step.actor}: {step.action}) waits for the page\n"
        )
        sys.stderr.flush()
        await live.pause(step)

    return pause


def write_html(path: Path, record: RunRecord, lang: str) -> None:
    """The run's HTML report, written whole or not at all (``outputs.write_output``)."""
    page = render_html(record, lang).encode("utf-8")
    if path == Path("-"):
        sys.stdout.buffer.write(page)
        sys.stdout.flush()
        return
    write_output(path, lambda stream: stream.write(page))


def report_command(path: Path, output: Path | None, lang: str | None) -> ExitStatus:
    """A saved run (``run --json`` / ``--save``) as the HTML page ``run --html`` writes."""
    target = output if output is not None else path.with_suffix(".html")
    if target != Path("-"):
        if target.resolve() == path.resolve():
            raise UsageError(f"{target}: would overwrite the run it is drawn from; use -o FILE")
        check_output(target)
    record = read_run(path)
    write_html(target, record, lang or record.lang or "en")
    if target != Path("-"):
        sys.stderr.write(f"handshake-lab: wrote {target}\n")
    return ExitStatus.OK


def show_command(path: Path, lang: str | None) -> ExitStatus:
    """Draw a saved run (``run --json`` or ``--save``) as ``run`` drew it; its verdict."""
    record = read_run(path)
    TableRenderer(make_console(), lang or record.lang or "en").render(record)
    return record.exit_status()
