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
import contextlib
import hmac
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from handshake_lab.record.events import Event
from handshake_lab.record.run import Recorder, RunRecord
from handshake_lab.render.html import render_body, render_html, render_panel
from handshake_lab.spec.model import Step

if TYPE_CHECKING:
    from handshake_lab.lab.play import Control

KEEPALIVE_S = 5.0
"""A comment line on the event stream this often, so a closed page is noticed."""
DRAIN_S = 3.0
"""At the end, how long the streams get to deliver the last page before the server stops."""
MAX_COMMAND = 4096
"""The longest command line (bytes) the page may POST (``play --browser``)."""
RECENT_SAID = 10
"""How many of the session's last messages a page that connects late is shown."""


class Inbox:
    """Command lines from the server's threads to the session's event loop, in order.

    ``put`` (any thread) never blocks; ``get`` (the loop) waits for the next line. A ``get``
    cancelled while waiting loses nothing: a line leaves the inbox only when ``get`` returns it.
    """

    def __init__(self) -> None:
        self._lines: deque[str] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def put(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads
                loop.call_soon_threadsafe(wake.set)

    async def get(self) -> str:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop or self._wake is None:
                self._loop, self._wake = loop, asyncio.Event()
            wake = self._wake
        while True:
            with self._lock:
                if self._lines:
                    return self._lines.popleft()
                wake.clear()
            await wake.wait()


class LiveView:
    """The report page of a run in progress, served on 127.0.0.1. An event sink (call it
    with each event), a ``pause`` for ``--step``, and ``close`` to stop serving."""

    def __init__(self, lang: str, *, step_mode: bool = False, play: bool = False) -> None:
        self.lang = lang
        self.step_mode = step_mode
        self.play = play
        """``play --browser``: the page has the command panel, POSTs ``command``, and can
        download the session as a lab (``lab.toml``)."""
        self.commands = Inbox()
        self.lab_file: Callable[[], str | None] = lambda: None
        self._panel: str | None = render_panel([], {}, lang) if play else None
        self._panel_version = 0
        self._said: list[str] = []
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
        with self._cond:
            panel = self._panel
        return render_html(self._record(), self.lang, live=True, panel=panel)

    def set_controls(self, controls: Sequence[Control], states: Mapping[str, str]) -> None:
        """``play``: the session waits for a command; the pages get the buttons for now."""
        panel = render_panel(controls, states, self.lang)
        with self._cond:
            self._panel = panel
            self._panel_version += 1
            self._cond.notify_all()

    def command(self, line: str) -> bool:
        """The page's command line for the session (``commands``); False once it has ended."""
        with self._cond:
            if self._closed:
                return False
        self.commands.put(line)
        return True

    def say(self, text: str) -> None:
        """``play``: a message of the session (a refused command's reason too) for the pages."""
        with self._cond:
            self._said.append(text)
            self._cond.notify_all()

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

    def _changed_since(self, seen: tuple[int, int, int]) -> Callable[[], bool]:
        return lambda: self._seen() != seen or self._closed

    def _seen(self) -> tuple[int, int, int]:
        return (self._version, self._panel_version, len(self._said))

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Server-sent events: ``page`` (the report's body), ``wait`` (the step the lab waits
        to run), with ``play`` ``panel`` (the buttons) and ``say`` (one message each), ``end``;
        a comment line every few seconds while nothing happens."""
        seen = -1
        seen_panel = -1
        with self._cond:
            self._viewers += 1
            self._streams.add(threading.current_thread())
            said_from = max(0, len(self._said) - RECENT_SAID)
            self._cond.notify_all()
        last_wait: int | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(
                        self._changed_since((seen, seen_panel, said_from)), KEEPALIVE_S
                    )
                    version, body, closed = self._version, self._body, self._closed
                    waiting = self._waiting[2] if self._waiting is not None else None
                    panel, panel_version = self._panel, self._panel_version
                    said = self._said[said_from:]
                chunks: list[str] = []
                if version != seen:
                    chunks.append(_event("page", body))
                    if waiting is not None and waiting != last_wait:
                        chunks.append(_event("wait", str(waiting)))
                    last_wait = waiting
                    seen = version
                chunks += [_event("say", text) for text in said]
                said_from += len(said)
                if panel is not None and panel_version != seen_panel:
                    chunks.append(_event("panel", panel))
                    seen_panel = panel_version
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
        view = self.server.view
        if route == "":
            self._send(HTTPStatus.OK, view.page().encode("utf-8"), "text/html")
        elif route == "lab.toml" and view.play:
            text = view.lab_file()
            if text is None:
                self._send(HTTPStatus.CONFLICT, b"nothing played yet\n")
            else:
                self._send(HTTPStatus.OK, text.encode("utf-8"), "application/toml")
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
        if route == "command" and self.server.view.play:
            self._command()
        elif route != "next":
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")
        elif self.server.view.advance():
            self._send(HTTPStatus.NO_CONTENT)
        else:
            self._send(HTTPStatus.CONFLICT, b"the lab is not waiting\n")

    def _command(self) -> None:
        """``play``: one command line (the body, UTF-8 text) for the session; 202 once it is
        queued (its steps and messages come on the event stream), 400 for what is not one
        line of text, 409 once the session has ended."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_COMMAND:
            self._send(HTTPStatus.BAD_REQUEST, b"one command line of at most 4096 bytes\n")
            return
        try:
            line = self.rfile.read(length).decode("utf-8").strip()
        except UnicodeDecodeError:
            line = "\n"
        if "\n" in line or "\r" in line:
            self._send(HTTPStatus.BAD_REQUEST, b"one command line of UTF-8 text\n")
            return
        if self.server.view.command(line):
            self._send(HTTPStatus.ACCEPTED)
        else:
            self._send(HTTPStatus.CONFLICT, b"the session has ended\n")


__all__ = ["Inbox", "LiveView"]
