"""Ctrl-C and SIGTERM reach a run as ``task.cancel()``: no wait may swallow it.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the cancel lands in the same
loop iteration as that result, so a signal was lost now and then (2 in 20 SIGTERMs after step 5
of half-close: the lab ran on and exited 0). ``handshake_lab.net.waits`` replaces it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from handshake_lab.errors import Interrupted
from handshake_lab.lab.session import RunRequest, drive
from handshake_lab.net.loops import loop_factory
from handshake_lab.net.waits import cancel_and_wait, wait_for
from handshake_lab.placement import Topology
from handshake_lab.spec.loader import builtin_dir, load_lab


def _run(loop_name: str, main: object) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(main)  # type: ignore[arg-type]


async def _cancel_as_result_arrives(use_stdlib: bool) -> bool:
    """True if the caller's cancel propagated."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()

    async def waiter() -> int:
        if use_stdlib:
            return await asyncio.wait_for(fut, 5)
        return await wait_for(fut, 5)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the task now waits
    fut.set_result(1)  # the result and the signal arrive together
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


def test_wait_for_keeps_a_cancel_that_arrives_with_the_result(loop_name: str) -> None:
    async def main() -> None:
        assert await _cancel_as_result_arrives(use_stdlib=False)

    _run(loop_name, main())


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for was fixed in 3.12")
def test_stdlib_wait_for_loses_it_on_311(loop_name: str) -> None:
    """Why waits.wait_for exists: if this starts failing, the stdlib no longer loses it."""

    async def main() -> None:
        assert not await _cancel_as_result_arrives(use_stdlib=True)

    _run(loop_name, main())


def test_wait_for_still_times_out(loop_name: str) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await wait_for(asyncio.Event().wait(), 0.01)

    _run(loop_name, main())


def test_cancel_and_wait_ends_the_task_and_keeps_the_callers_cancel(loop_name: str) -> None:
    async def main() -> None:
        inner = asyncio.create_task(asyncio.Event().wait())
        await asyncio.sleep(0)
        await cancel_and_wait(inner)  # the inner task's CancelledError is not ours
        assert inner.cancelled()

        async def stubborn() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # slow to end: the caller is cancelled meanwhile

        slow = asyncio.create_task(stubborn())
        await asyncio.sleep(0)

        async def caller() -> None:
            await cancel_and_wait(slow)

        outer = asyncio.create_task(caller())
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    _run(loop_name, main())


async def _sigint_inside_a_callback(runner: object) -> None:
    """A callback that checks a future, receives SIGINT, then sets the future's result: what
    the loop's connect callback does (`_sock_connect_cb`) when Ctrl-C lands at that moment."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    failures: list[BaseException] = []

    def callback() -> None:
        assert not fut.done()
        os.kill(os.getpid(), signal.SIGINT)  # Python runs a Python-level handler right here
        try:
            fut.set_result(None)
        except asyncio.InvalidStateError as exc:
            failures.append(exc)

    loop.call_soon(callback)
    await fut  # the run's own task waits on it directly, as on a connect
    assert not failures
    await asyncio.sleep(30)  # where the deferred Ctrl-C lands


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_ctrl_c_cancels_a_run_between_callbacks_never_inside_one(loop_name: str) -> None:
    """asyncio.Runner's own Ctrl-C handler cancels the task inside the signal handler: between
    the callback's check and its set_result the future was cancelled, and the loop logged
    InvalidStateError with a traceback (CI, a Ctrl-C during a connect). A run handles SIGINT
    through the loop: the callback completes, then the run ends as interrupted."""
    lab = load_lab(builtin_dir() / "close.toml")
    request = RunRequest(
        lab=lab, topology=Topology.LOOPBACK, loop=loop_name, capture=False, trace=False
    )
    try:
        with pytest.raises(Interrupted, match=r"^interrupted; every socket was closed$"):
            drive(request, lambda event: None, _sigint_inside_a_callback)
    except KeyboardInterrupt:  # asyncio.Runner's handler: a failure, not the end of pytest
        pytest.fail("Ctrl-C reached the run through asyncio.Runner's handler, inside a callback")
