"""The ``play`` command: options -> ``PlayRequest`` -> ``lab.play.play`` -> exit code.

Only the terminal lives here: where the command lines come from (a prompt with readline
history and completion on a terminal; a file or a pipe read line by line, each line echoed
before its output) and where the tables and messages go.
"""

from __future__ import annotations

import asyncio
import contextlib
import readline  # input() gets line editing, history and completion (this command only)
import sys
import termios
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TextIO

from handshake_lab import tools
from handshake_lab.cli.events_out import EventOutput
from handshake_lab.cli.runlab import (
    checked_link,
    isolate_without_root,
    need_netem,
    start_live_view,
)
from handshake_lab.errors import ExitStatus, Interrupted, UsageError
from handshake_lab.i18n.play import play_text
from handshake_lab.lab.play import PlayRequest, PlaySession, completions, play
from handshake_lab.lab.predict import ENDS
from handshake_lab.observe.defaults import default_observers
from handshake_lab.outputs import check_output
from handshake_lab.placement import Topology
from handshake_lab.render.live import LiveView
from handshake_lab.signals import sigterm_as_interrupt

PROMPT = "play> "


class LineReader:
    """The next command line, read in a daemon thread so the event loop keeps serving the
    sockets (and the idle timeout can give up on a read that never ends)."""

    def __init__(self, stream: TextIO, interactive: bool, echo: Callable[[str], None]) -> None:
        self.stream = stream
        self.interactive = interactive
        self.echo = echo

    def _read(self) -> str | None:
        if self.interactive:
            try:
                return input(PROMPT)
            except EOFError:
                return None
        line = self.stream.readline()
        return line if line else None

    async def __call__(self) -> str | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()

        def deliver(line: str | None) -> None:
            if not done.done():
                done.set_result(line)

        def work() -> None:
            try:
                line = self._read()
            except (OSError, ValueError, UnicodeDecodeError):
                line = None
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(deliver, line)

        threading.Thread(target=work, name="play-input", daemon=True).start()
        line = await done
        if line is not None and not self.interactive:
            self.echo(f"{PROMPT}{line.rstrip()}")
        return line


class EitherReader:
    """``--browser``: the next command from the terminal or the page, whichever comes first.
    The terminal's pending read is kept for the next call (one reader thread at a time); a
    page's command is echoed on the terminal so its log reads as a session."""

    def __init__(self, terminal: LineReader, live: LiveView, echo: Callable[[str], None]) -> None:
        self.terminal = terminal
        self.live = live
        self.echo = echo
        self._typed: asyncio.Future[str | None] | None = None

    async def __call__(self) -> str | None:
        if self._typed is None:
            self._typed = asyncio.ensure_future(self.terminal())
        elif self.terminal.interactive:
            # input() still waits with its prompt scrolled away by the page's step: again.
            sys.stdout.write(PROMPT)
            sys.stdout.flush()
        clicked: asyncio.Future[str | None] = asyncio.ensure_future(self.live.commands.get())
        try:
            await asyncio.wait({self._typed, clicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not clicked.done():
                clicked.cancel()  # the inbox keeps the line until a get returns it
        if clicked.done() and not clicked.cancelled():
            line = clicked.result()
            # On a terminal, over the prompt input() shows (and the user may be typing at).
            erase = "\r\x1b[K" if self.terminal.interactive else ""
            self.echo(f"{erase}{PROMPT}{line}    (browser)")
            return line
        typed, self._typed = self._typed, None
        return typed.result()


def panel_states(session: PlaySession) -> dict[str, str]:
    """Each end's state as the kernel last showed it (ABSENT: no socket), for the panel."""
    return {
        end: "ABSENT" if (s := session.model.states[end]).name == "CLOSE" else s.name
        for end in ENDS
    }


@contextlib.contextmanager
def terminal(interactive: bool) -> Iterator[None]:
    """On a terminal: tab completion and history (readline), and the terminal's settings put
    back at the end even if the session ends while readline is reading."""
    if not interactive:
        yield
        return

    def complete(text: str, state: int) -> str | None:
        before = readline.get_line_buffer()[: readline.get_begidx()].split()
        options = completions(text, before)
        return options[state] + " " if state < len(options) else None

    readline.set_completer_delims(" \t")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    saved = None
    with contextlib.suppress(termios.error):
        saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        yield
    finally:
        readline.set_completer(None)
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def browser_ready(live: LiveView) -> Callable[[PlaySession], None]:
    """Each time the session waits: the page's buttons for now, and its lab download."""

    def ready(session: PlaySession) -> None:
        live.lab_file = session.lab_file
        live.set_controls(session.controls(), panel_states(session))

    return ready


def both(*outs: Callable[[str], None]) -> Callable[[str], None]:
    def say(text: str) -> None:
        for out in outs:
            out(text)

    return say


def play_command(
    *,
    topology: Topology,
    loop: str,
    lang: str,
    json_out: bool,
    save: Path | None,
    script: Path | None,
    idle: float,
    port: int | None,
    argv: list[str] | None,
    browser: bool = False,
    ip: int = 4,
    delay: float | None = None,
    loss: float | None = None,
) -> ExitStatus:
    if topology not in (Topology.LOOPBACK, Topology.NETNS):
        raise UsageError("play runs with --topology loopback or netns")
    link = checked_link(delay, loss, topology)
    if save is not None:
        check_output(save)
    netns = topology is Topology.NETNS
    for tool in tools.needed_for("netns" if netns else "loopback", holds=netns):
        tools.require(tool)
    need_netem(link)  # before a rerun in a user namespace: one line, not two
    isolate_without_root(
        netns,
        [script, save],
        argv,
        browser=browser,
        instead="play in the terminal instead, or on --topology loopback",
    )
    default_observers(ip)  # fail early if ss or psutil is unusable
    stream: TextIO = sys.stdin
    if script is not None:
        try:
            stream = script.open(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--script {script}: {exc.strerror or exc}") from exc
    interactive = script is None and sys.stdin.isatty()
    out = sys.stderr if json_out else sys.stdout

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    if interactive:
        say(
            "handshake-lab play: 'help' lists the commands; there is no undo (the kernel has none)"
        )
    request = PlayRequest(
        topology=topology,
        loop=loop,
        lang=lang,
        idle=idle,
        port=port,
        ip=ip,
        link=link if link.active else None,
    )
    live: LiveView | None = None
    ready: Callable[[PlaySession], None] | None = None
    try:
        # SIGTERM/SIGHUP/SIGQUIT from the start, as Ctrl-C: the live page's URL is printed (a
        # reader may act on it) before the session's own handlers are in place.
        with (
            sigterm_as_interrupt(),
            terminal(interactive),
            EventOutput(lang, json_out, save) as events,
        ):
            reader: Callable[[], Awaitable[str | None]] = LineReader(stream, interactive, say)
            tell: Callable[[str], None] = say
            if browser:
                live = start_live_view(lang, step=True, play=True)  # no wait for a viewer
                events.add(live)
                reader = EitherReader(LineReader(stream, interactive, say), live, say)
                ready = browser_ready(live)
                tell = both(say, live.say)
                sys.stderr.write(play_text("browser_note", lang) + "\n")
            record = play(request, events.emit, reader, tell, events.started, ready)
    except (KeyboardInterrupt, Interrupted):
        if interactive:
            sys.stderr.write("\n")  # off the prompt's line
        raise
    finally:
        if live is not None:
            live.close()
        if stream is not sys.stdin:
            stream.close()
    events.ladders(record)
    return ExitStatus.OK
