"""``watch`` output: a live table on a terminal, plain lines without one, NDJSON for ``--json``.

All three come from the same ``Refresh`` records (``handshake_lab.watch``):

- ``LiveWatchRenderer``: rich ``Live`` redrawn once per refresh (``auto_refresh`` off: the
  watch loop decides when). Header with per-state counts, a table of the sockets that fits the
  screen (rows that just changed are highlighted, the "in state" column is the time since the
  last transition), and the most recent transitions below it. Building a 50 000-row table
  ten times a second would cost more than reading the kernel, so only visible rows are built.
- ``PlainWatchRenderer``: one line per transition, no rich at all (so never an escape code),
  ``HH:MM:SS.mmm LOCAL > REMOTE OLD -> NEW (in OLD 1.234 s) [pid P NAME]``. ``ABSENT`` is the
  state of a socket that is not in the kernel's table, as in the labs.
- ``JsonWatchRenderer``: ``{"schema": 1, "event": "watch" | "transition" | "socket" |
  "summary", ...}``, one object per line (``docs/json.md`` conventions).

Human output fits 80 columns (``make_console``); rich honours NO_COLOR.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from handshake_lab.observe.base import Address, Timer
from handshake_lab.tcp.states import TcpState
from handshake_lab.watch import Refresh
from handshake_lab.watch.tracker import Tracked, Transition, WatchFilter

JSON_SCHEMA = 1
ABSENT = "ABSENT"
STATE_ORDER: tuple[TcpState, ...] = (
    TcpState.LISTEN,
    TcpState.SYN_SENT,
    TcpState.SYN_RECV,
    TcpState.NEW_SYN_RECV,
    TcpState.ESTABLISHED,
    TcpState.FIN_WAIT1,
    TcpState.FIN_WAIT2,
    TcpState.CLOSING,
    TcpState.TIME_WAIT,
    TcpState.CLOSE_WAIT,
    TcpState.LAST_ACK,
    TcpState.CLOSE,
)
"""Life-cycle order for counts: opening, open, active close, passive close."""

NameOf = Callable[[int], str | None]


def clock_text(wall: float) -> str:
    """``HH:MM:SS.mmm`` in local time."""
    local = time.localtime(wall)
    return time.strftime("%H:%M:%S", local) + f".{int(wall * 1000) % 1000:03d}"


def iso_time(wall: float) -> str:
    """ISO 8601 with milliseconds and the UTC offset, for JSON."""
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


def peer_text(remote: Address | None) -> str:
    return "*" if remote is None else remote.shown


def state_text(state: TcpState | None) -> str:
    return ABSENT if state is None else state.name


def duration_text(seconds: float, lower_bound: bool = False) -> str:
    """``1.234 s``; ``>=1.234 s`` when the socket was in the state before the watch began."""
    return f"{'>=' if lower_bound else ''}{seconds:.3f} s"


def short_duration(seconds: float) -> str:
    """Compact, for table cells: ``0.3s``, ``42s``, ``7m``, ``2h``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


TIMER_SHORT = {"on": "rto", "keepalive": "keep", "timewait": "tw", "persist": "probe"}
"""Table cells are narrow: ``ss``'s timer names shortened (JSON keeps them whole)."""


def timer_text(timer: Timer | None) -> str:
    """``tw 59s``, ``rto 0.2s``, ``keep 2h``: the timer's short name and time left."""
    if timer is None:
        return ""
    return f"{TIMER_SHORT.get(timer.name, timer.name)} {short_duration(timer.remaining)}"


def owner_text(pid: int | None, name_of: NameOf) -> str:
    if pid is None:
        return ""
    name = name_of(pid)
    return f"{pid} {name}" if name else str(pid)


def counts_text(counts: Mapping[TcpState, int]) -> str:
    """``LISTEN 1  ESTABLISHED 2`` in life-cycle order; ``no sockets`` if empty."""
    parts = [f"{state.name} {counts[state]}" for state in STATE_ORDER if counts.get(state)]
    return "  ".join(parts) if parts else "no sockets"


def describe_filter(watch_filter: WatchFilter) -> str:
    """``port 8080, pid 42, state ESTABLISHED``; ``all TCP sockets`` without a filter."""
    parts: list[str] = []
    if watch_filter.ports is not None:
        parts.append("port " + ",".join(str(p) for p in sorted(watch_filter.ports)))
    if watch_filter.pid is not None:
        parts.append(f"pid {watch_filter.pid}")
    if watch_filter.state is not None:
        parts.append(f"state {watch_filter.state.name}")
    return ", ".join(parts) if parts else "all TCP sockets"


def transition_line(event: Transition, wall: float, name_of: NameOf) -> str:
    """One plain line for one transition (see the module docstring)."""
    head = f"{clock_text(wall)} {event.local.shown} > {peer_text(event.remote)} "
    if event.initial:
        line = head + f"{state_text(event.new)} (at start)"
    else:
        line = head + f"{state_text(event.old)} -> {state_text(event.new)}"
        if event.in_old is not None and event.old is not None:
            in_old = duration_text(event.in_old, event.in_old_lower_bound)
            line += f" (in {event.old.name} {in_old})"
    owner = owner_text(event.pid, name_of)
    return line + (f" [pid {owner}]" if owner else "")


def short_transition_line(event: Transition, wall: float) -> str:
    """The live view's log line: ``HH:MM:SS LOCAL > REMOTE OLD -> NEW (1.234 s)``, where the
    time is the time spent in OLD; 78 columns for IPv4 endpoints."""
    line = (
        f"{clock_text(wall)[:8]} {event.local.shown} > {peer_text(event.remote)} "
        f"{state_text(event.old)} -> {state_text(event.new)}"
    )
    if event.in_old is not None:
        line += f" ({duration_text(event.in_old, event.in_old_lower_bound)})"
    return line


def _timer_json(timer: Timer | None) -> dict[str, Any] | None:
    if timer is None:
        return None
    return {"name": timer.name, "remaining": round(timer.remaining, 3), "count": timer.count}


def transition_json(event: Transition, wall: float, name_of: NameOf) -> dict[str, Any]:
    return {
        "schema": JSON_SCHEMA,
        "event": "transition",
        "time": iso_time(wall),
        "kind": event.kind,
        "initial": event.initial,
        "local": event.local.shown,
        "remote": None if event.remote is None else event.remote.shown,
        "old": state_text(event.old),
        "new": state_text(event.new),
        "in_old_s": None if event.in_old is None else round(event.in_old, 3),
        "in_old_lower_bound": event.in_old_lower_bound,
        "pid": event.pid,
        "process": None if event.pid is None else name_of(event.pid),
        "timer": _timer_json(event.record.timer) if event.new is not None else None,
    }


def socket_json(entry: Tracked, now: float, name_of: NameOf) -> dict[str, Any]:
    record = entry.record
    return {
        "schema": JSON_SCHEMA,
        "event": "socket",
        "local": record.local.shown,
        "remote": None if record.remote is None else record.remote.shown,
        "state": entry.state.name,
        "in_state_s": round(now - entry.since, 3),
        "in_state_lower_bound": entry.since_start,
        "timer": _timer_json(record.timer),
        "recv_q": record.recv_q,
        "send_q": record.send_q,
        "pid": entry.pid,
        "process": None if entry.pid is None else name_of(entry.pid),
    }


def _counts_json(counts: Mapping[TcpState, int]) -> dict[str, int]:
    return {state.name: counts[state] for state in STATE_ORDER if counts.get(state)}


class JsonWatchRenderer:
    """NDJSON on ``out``: ``watch`` first, ``transition`` per change, ``summary`` last."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._costs: list[float] = []
        self._last: Refresh | None = None

    def _write(self, objects: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)
        if text:
            self.out.write(text)
            self.out.flush()

    def started(self, watch_filter: WatchFilter, observer: str, interval: float | None) -> None:
        self._write(
            [
                {
                    "schema": JSON_SCHEMA,
                    "event": "watch",
                    "time": iso_time(time.time()),
                    "observer": observer,
                    "ports": None if watch_filter.ports is None else sorted(watch_filter.ports),
                    "pid": watch_filter.pid,
                    "state": None if watch_filter.state is None else watch_filter.state.name,
                    "interval_s": interval,
                }
            ]
        )

    def __call__(self, refresh: Refresh) -> None:
        self._last = refresh
        self._costs.append(refresh.cost_s)
        name_of = refresh.process_name
        self._write(transition_json(t, refresh.wall, name_of) for t in refresh.transitions)

    def sockets(self, refresh: Refresh) -> None:
        """``--once``: every socket of the snapshot, one ``socket`` object each."""
        self._last = refresh
        self._costs.append(refresh.cost_s)
        entries = sorted(refresh.tracker.sockets(), key=_row_order)
        self._write(socket_json(e, refresh.at, refresh.process_name) for e in entries)

    def summary(self) -> None:
        last = self._last
        counts = last.tracker.counts() if last is not None else {}
        costs = sorted(self._costs)
        self._write(
            [
                {
                    "schema": JSON_SCHEMA,
                    "event": "summary",
                    "refreshes": len(costs),
                    "sockets": sum(counts.values()),
                    "counts": _counts_json(counts),
                    "refresh_ms_median": (
                        round(costs[len(costs) // 2] * 1000, 3) if costs else None
                    ),
                    "observer": last.observer if last is not None else None,
                }
            ]
        )


class PlainWatchRenderer:
    """Plain lines on ``out`` (no terminal): one per transition, flushed per refresh."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, refresh: Refresh) -> None:
        if not refresh.transitions:
            return
        name_of = refresh.process_name
        lines = [transition_line(t, refresh.wall, name_of) for t in refresh.transitions]
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


def _row_order(entry: Tracked) -> tuple[int, str, int, str, int]:
    record = entry.record
    remote = record.remote
    return (
        record.local.port,
        record.local.host,
        0 if remote is None else 1,
        "" if remote is None else remote.host,
        0 if remote is None else remote.port,
    )


_STATE_W = 11  # ESTABLISHED
_IN_STATE_W = 8  # the heading "in state"
_TIMER_W = 9  # "probe 59s"
_OWNER_MAX = 16  # pid + part of the 15-character comm
_GAPS = 10  # six columns, two characters between two of them


def _fit(local_w: int, remote_w: int, owner_w: int, width: int) -> tuple[int, int, int]:
    """Column widths for the endpoints and the owner so the row fits ``width``.

    The state, its time and the timer keep their width; the owner gives way first (down to
    its heading's length), then the longer endpoint (IPv6), which ends in an ellipsis.
    """
    room = width - _GAPS - _STATE_W - _IN_STATE_W - _TIMER_W
    owner_w = min(max(owner_w, 11), _OWNER_MAX, max(5, room - local_w - remote_w))  # 11: heading
    room -= owner_w
    while local_w + remote_w > room and max(local_w, remote_w) > 9:
        if local_w >= remote_w:
            local_w -= 1
        else:
            remote_w -= 1
    return local_w, remote_w, owner_w


def socket_table(
    entries: Sequence[Tracked],
    now: float,
    name_of: NameOf,
    *,
    width: int = 80,
    highlight_s: float = 0.0,
    in_state: bool = True,
) -> Table:
    """The sockets as a table at most ``width`` wide; rows changed within ``highlight_s``
    are marked (state in bold, the row reversed). ``in_state=False`` leaves out the time in
    state (meaningless for a single snapshot: every socket was there before it)."""
    rows: list[tuple[str, str, Text, str, str, str, str | None]] = []
    for entry in entries:
        record = entry.record
        since = short_duration(now - entry.since)
        if entry.since_start:
            since = ">" + since
        fresh = entry.changed_at is not None and now - entry.changed_at <= highlight_s
        rows.append(
            (
                record.local.shown,
                peer_text(record.remote),
                Text(entry.state.name, style="bold yellow" if fresh else ""),
                since,
                timer_text(record.timer),
                owner_text(entry.pid, name_of),
                "reverse" if fresh and entry.previous is not None else None,
            )
        )
    local_w, remote_w, owner_w = _fit(
        max((len(row[0]) for row in rows), default=5),
        max((len(row[1]) for row in rows), default=6),
        max((len(row[5]) for row in rows), default=11),
        width if in_state else width + _IN_STATE_W + 2,
    )
    # SIMPLE_HEAD draws a blank column separator: with one space of right padding, two
    # characters part the columns (``_GAPS``).
    table = Table(
        box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, expand=False
    )
    table.add_column("local", no_wrap=True, overflow="ellipsis", width=max(local_w, 5))
    table.add_column("remote", no_wrap=True, overflow="ellipsis", width=max(remote_w, 6))
    table.add_column("state", no_wrap=True, width=_STATE_W)
    if in_state:
        table.add_column("in state", no_wrap=True, justify="right", width=_IN_STATE_W)
    table.add_column("timer", no_wrap=True, overflow="ellipsis", width=_TIMER_W)
    table.add_column("pid/process", no_wrap=True, overflow="ellipsis", width=max(owner_w, 5))
    for local, remote, state, since, timer, owner, style in rows:
        if in_state:
            table.add_row(local, remote, state, since, timer, owner, style=style)
        else:
            table.add_row(local, remote, state, timer, owner, style=style)
    return table


def print_once(console: Console, refresh: Refresh, description: str) -> None:
    """``--once``: a heading with the counts, then every socket, sorted by port."""
    tracker = refresh.tracker
    counts = tracker.counts()
    total = sum(counts.values())
    console.print(
        Text(f"{description}: {total} socket{'' if total == 1 else 's'} ({refresh.observer})")
    )
    console.print(Text(counts_text(counts)))
    if total:
        entries = sorted(tracker.sockets(), key=_row_order)
        console.print(
            socket_table(
                entries, refresh.at, refresh.process_name, width=console.width, in_state=False
            )
        )


class LiveWatchRenderer:
    """The live view on a terminal; use as a context manager around the watch loop."""

    HISTORY = 8
    HIGHLIGHT_S = 3.0

    def __init__(self, console: Console, description: str, interval: float) -> None:
        self.console = console
        self.description = description
        self.interval = interval
        self._recent: deque[tuple[float, Transition]] = deque(maxlen=self.HISTORY)
        self._live = Live(
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )

    def __enter__(self) -> LiveWatchRenderer:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._live.stop()

    def __call__(self, refresh: Refresh) -> None:
        for event in refresh.transitions:
            if not event.initial:
                self._recent.append((refresh.wall, event))
        self._live.update(self.view(refresh), refresh=True)

    def view(self, refresh: Refresh) -> RenderableType:
        tracker = refresh.tracker
        counts = tracker.counts()
        total = sum(counts.values())
        head = Text(f"{self.description}", style="bold")
        head.append(
            f"  {total} socket{'' if total == 1 else 's'}  {refresh.observer}"
            f"  every {self.interval:g} s  {clock_text(refresh.wall)[:8]}"
            f"  refresh {refresh.cost_s * 1000:.1f} ms"
        )
        parts: list[RenderableType] = [head, Text(counts_text(counts))]
        # Rows: what is left of the screen after the header, table head, history and hints.
        fixed = 2 + 3 + (1 + len(self._recent) if self._recent else 0) + 2
        room = max(1, self.console.size.height - fixed)
        entries: list[Tracked] = []
        for entry in tracker.sockets():
            if len(entries) == room:
                break
            entries.append(entry)
        if entries:
            parts.append(
                socket_table(
                    entries,
                    refresh.at,
                    refresh.process_name,
                    width=self.console.width,
                    highlight_s=self.HIGHLIGHT_S,
                )
            )
        if total > len(entries):
            parts.append(Text(f"... and {total - len(entries)} more", style="dim"))
        if self._recent:
            parts.append(Text("recent transitions (time in the old state):", style="bold"))
            for wall, event in self._recent:
                line = short_transition_line(event, wall)
                parts.append(Text(line, no_wrap=True, overflow="ellipsis"))
        parts.append(Text("Ctrl-C to stop", style="dim"))
        return Group(*parts)


__all__ = [
    "JsonWatchRenderer",
    "LiveWatchRenderer",
    "PlainWatchRenderer",
    "clock_text",
    "counts_text",
    "describe_filter",
    "print_once",
    "socket_table",
    "transition_json",
    "transition_line",
]
