"""The ``run`` command's one function: load, pick observers and loop, run, return a status."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from handshake_lab.errors import ExitStatus, Interrupted
from handshake_lab.lab.loader import find_lab
from handshake_lab.lab.model import Step
from handshake_lab.lab.placements import placed
from handshake_lab.lab.runner import Emit, LabRun, Pause, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.base import Observer
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.render.jsonl import JsonLinesRenderer
from handshake_lab.render.labels import label
from handshake_lab.render.table import TableRenderer, make_console


def default_observers() -> list[Observer]:
    """ss and psutil side by side, as the labs promise. Fails early if either is missing."""
    observers: list[Observer] = [SsObserver(), PsutilObserver()]
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
def sigterm_as_interrupt() -> Iterator[None]:
    """Outside the event loop, SIGTERM raises KeyboardInterrupt so ``finally`` blocks (the
    topology's teardown) run; inside the loop the runner's own handler cancels the run."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_lab_command(
    name: str,
    *,
    lang: str,
    loop: str,
    topology: str,
    json_out: bool,
    step: bool,
    port: int | None,
) -> ExitStatus:
    lab = find_lab(name)
    factory = loop_factory(loop)
    default_observers()  # fail early, before building anything, if ss or psutil is unusable
    emit: Emit = JsonLinesRenderer() if json_out else TableRenderer(make_console(), lang)
    pause = make_pause(lang) if step and sys.stdin.isatty() else None
    with sigterm_as_interrupt(), placed(topology, lab, default_observers) as ends:
        options = RunOptions(lang=lang, loop=loop, topology=topology, port=port, host=ends.host)
        runner = LabRun(
            lab, options, ends.observers, emit, pause, server=ends.server, clients=ends.clients
        )

        async def main() -> bool:
            # SIGTERM cancels the run like Ctrl-C does, so sockets are released either way.
            task = asyncio.current_task()
            assert task is not None
            running = asyncio.get_running_loop()
            running.add_signal_handler(signal.SIGTERM, task.cancel)
            try:
                result = await runner.run()
            finally:
                running.remove_signal_handler(signal.SIGTERM)
            return result.passed

        try:
            with asyncio.Runner(loop_factory=factory) as r:
                passed = r.run(main())
        except asyncio.CancelledError as exc:
            raise Interrupted("terminated; every socket was closed") from exc
    return ExitStatus.OK if passed else ExitStatus.KERNEL_DISAGREED
