"""Helpers for the agent tests: an agent on its own thread and event loop, raw clients.

The agent runs on a separate thread with its own loop (asyncio or uvloop), as it would in its
own process, so a test can talk to it with plain blocking sockets or drive a lab from the main
thread's loop. Waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from handshake_lab.agent.protocol import encode_request, proof
from handshake_lab.agent.server import Agent, AgentConfig
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.defaults import fast_observer
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver

TOKEN = "0123456789abcdef" * 4
HOST = "127.0.0.1"
T = TypeVar("T")


def poll_until(probe: Callable[[], T | None], *, timeout: float = 5.0, what: str) -> T:
    """Call ``probe`` until it returns something truthy; ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


class AgentThread:
    """An ``Agent`` serving on a background thread; ``port`` is its control port."""

    def __init__(self, loop: str = "asyncio", **config: Any) -> None:
        self.config = AgentConfig(host=HOST, port=0, token=TOKEN, **config)
        self.loop_name = loop
        fast = fast_observer(None)
        self.agent = Agent(
            self.config, [SsObserver(), PsutilObserver()], [fast] if fast is not None else []
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, name="agent", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.agent.start()
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.agent.close()

        try:
            with asyncio.Runner(loop_factory=loop_factory(self.loop_name)) as runner:
                runner.run(serve())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._ready.set()

    @property
    def port(self) -> int:
        return self.agent.port

    def start(self) -> AgentThread:
        self.thread.start()
        assert self._ready.wait(5.0), "agent did not start"
        assert self.error is None, self.error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10.0)
        assert not self.thread.is_alive(), "agent thread did not stop"
        if self.error is not None:
            raise self.error

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the agent's loop thread and return its result (to read state)."""
        assert self.loop is not None
        done = threading.Event()
        box: list[T] = []

        def run() -> None:
            box.append(fn())
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(5.0)
        return box[0]


@contextmanager
def running_agent(loop: str = "asyncio", **config: Any) -> Iterator[AgentThread]:
    agent = AgentThread(loop, **config).start()
    try:
        yield agent
    finally:
        agent.stop()


class RawClient:
    """A blocking control connection for hostile tests: send anything, read replies."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.stream = self.sock.makefile("rb")
        self.greeting = json.loads(self.stream.readline())
        self.seq = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, verb: str, args: dict[str, object] | None = None) -> dict[str, Any]:
        self.seq += 1
        self.send_raw(encode_request(self.seq, verb, args))
        return self.reply()

    def hello(self, token: str = TOKEN) -> dict[str, Any]:
        return self.request("hello", {"proof": proof(token, self.greeting["nonce"])})

    def reply(self) -> dict[str, Any]:
        line = self.stream.readline()
        assert line.endswith(b"\n"), f"connection closed without a reply: {line!r}"
        doc: dict[str, Any] = json.loads(line)
        return doc

    def closed_by_agent(self) -> bool:
        """True if the agent has closed its end (EOF)."""
        try:
            return self.stream.readline() == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.stream.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_good_session(port: int) -> None:
    """A well-behaved client still gets full service."""
    with RawClient(port) as client:
        hello = client.hello()
        assert hello["ok"], hello
        assert hello["result"]["host"] == HOST
        begin = client.request("begin", {"echo": True})
        assert begin["ok"], begin
        reserved = client.request("reserve_port", {"port": None, "taken": []})
        assert reserved["ok"], reserved
        assert client.request("close_all")["ok"]
        assert client.request("bye")["ok"]
