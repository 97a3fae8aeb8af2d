"""The live view: ``run LAB --browser`` serves the report page while the lab runs.

The page is ``render.html``'s, with ``live=True``: it opens a server-sent event stream
(``events``) and the server pushes the re-rendered report after every event of the run, so
the page shows step N as soon as the lab has done step N. With ``--step`` the lab waits before
each step for the page's "Run step N" button (a POST to ``next``), instead of Enter.

Only 127.0.0.1 is bound, on a port the kernel picks; every path starts with a random token
(``secrets.token_urlsafe``), and a request without it gets 404 (nothing tells a stranger that
a page exists). The server stops at the lab's end, on Ctrl-C and on SIGTERM (``close``): the
page keeps what it last showed, and says the lab has ended.

Why the standard library's ``http.server.ThreadingHTTPServer`` in a thread and no framework:
the view has three routes (the page, one event stream, one POST), server-sent events are a
plain streamed HTTP response, and a thread keeps the server off the lab's event loop (the
lab's asyncio or uvloop loop times kernel states; a web server in it would share its
scheduling, and the lab would depend on the server library's loop support). A small library
(aiohttp, starlette + uvicorn) would add a dependency and its own loop for nothing the three
routes need.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from handshake_lab.record.events import Event
from handshake_lab.record.run import Recorder, RunRecord
from handshake_lab.render.html import render_body, render_html
from handshake_lab.spec.model import Step

KEEPALIVE_S = 5.0
"""A comment line on the event stream this often, so a closed page is noticed."""
DRAIN_S = 3.0
"""At the end, how long the streams get to deliver the last page before the server stops."""


class LiveView:
    """The report page of a run in progress, served on 127.0.0.1. An event sink (call it
    with each event), a ``pause`` for ``--step``, and ``close`` to stop serving."""

    def __init__(self, lang: str, *, step_mode: bool = False) -> None:
        self.lang = lang
        self.step_mode = step_mode
        self.token = secrets.token_urlsafe(18)
        self._recorder = Recorder()
        self._cond = threading.Condition()
        self._version = 0
        self._body = render_body(None, lang, live=True)
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Future[None], int] | None = None
        self._closed = False
        self._viewers = 0
        self._streams: set[threading.Thread] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.view = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hslab-live", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    # -- the run's side ---------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Take the run's next event; the pages connected get the new report."""
        self._recorder(event)
        record = self._record()
        body = render_body(record, self.lang, live=True)
        with self._cond:
            self._body = body
            self._version += 1
            self._cond.notify_all()

    def _record(self) -> RunRecord | None:
        return self._recorder.record() if self._recorder.started is not None else None

    def page(self) -> str:
        return render_html(self._record(), self.lang, live=True)

    async def pause(self, step: Step) -> None:
        """Wait for the page's "Run step N" button (``--step``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._waiting = (loop, future, step.index)
            self._version += 1
            self._cond.notify_all()
        try:
            await future
        finally:
            with self._cond:
                self._waiting = None
                self._version += 1
                self._cond.notify_all()

    def wait_for_viewer(self, timeout: float) -> bool:
        """Block until a page has connected (or ``timeout`` seconds passed)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._viewers > 0 or self._closed, timeout)

    def close(self) -> None:
        """Tell every page the lab has ended, let the streams finish, stop serving."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            streams = list(self._streams)
        for thread in streams:
            thread.join(DRAIN_S)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(DRAIN_S)

    # -- the server's side ------------------------------------------------------------------

    def advance(self) -> bool:
        """The page's "next": release a waiting ``pause``; False if none waits."""
        with self._cond:
            waiting = self._waiting
        if waiting is None:
            return False
        loop, future, _ = waiting

        def release() -> None:
            if not future.done():
                future.set_result(None)

        loop.call_soon_threadsafe(release)
        return True

    def _changed_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._version != seen or self._closed

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Server-sent events: ``page`` (the report's body), ``wait`` (the step the lab waits
        to run), ``end``; a comment line every few seconds while nothing happens."""
        seen = -1
        with self._cond:
            self._viewers += 1
            self._streams.add(threading.current_thread())
            self._cond.notify_all()
        last_wait: int | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(self._changed_since(seen), KEEPALIVE_S)
                    version, body, closed = self._version, self._body, self._closed
                    waiting = self._waiting[2] if self._waiting is not None else None
                chunks: list[str] = []
                if version != seen:
                    chunks.append(_event("page", body))
                    if waiting is not None and waiting != last_wait:
                        chunks.append(_event("wait", str(waiting)))
                    last_wait = waiting
                    seen = version
                if closed:
                    chunks.append(_event("end", "end"))
                if not chunks:
                    chunks.append(": keep-alive\n\n")
                handler.wfile.write("".join(chunks).encode("utf-8"))
                handler.wfile.flush()
                if closed:
                    return
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            with self._cond:
                self._viewers -= 1
                self._streams.discard(threading.current_thread())


def _event(name: str, data: str) -> str:
    """One server-sent event (``data`` split into ``data:`` lines)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    view: LiveView


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "handshake-lab"
    sys_version = ""
    timeout = 30.0  # a page that stops reading cannot hold a stream's thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal belongs to the lab's tables."""

    def _route(self) -> str | None:
        """The path after the token, or None when the token is missing or wrong."""
        prefix = f"/{self.server.view.token}"
        path = self.path.split("?", 1)[0]
        head, rest = path[: len(prefix)], path[len(prefix) :]
        if not hmac.compare_digest(head.encode(), prefix.encode()):
            return None
        if rest and not rest.startswith("/"):
            return None
        return rest.lstrip("/")

    def _send(self, status: HTTPStatus, body: bytes = b"", kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        route = self._route()
        if route == "":
            self._send(HTTPStatus.OK, self.server.view.page().encode("utf-8"), "text/html")
        elif route == "events":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.server.view.stream(self)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def do_POST(self) -> None:
        route = self._route()
        if route != "next":
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")
        elif self.server.view.advance():
            self._send(HTTPStatus.NO_CONTENT)
        else:
            self._send(HTTPStatus.CONFLICT, b"the lab is not waiting\n")


__all__ = ["LiveView"]
