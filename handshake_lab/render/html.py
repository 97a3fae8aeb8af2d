"""The run as one self-contained HTML page: header, ladder, state diagram, steps.

``render_html(record, lang)`` returns the page as text; it reads the run record and nothing
else (``record/``'s events, the RFC table of ``tcp/`` for the diagram, the words of
``i18n/``), so ``run LAB --html FILE`` and ``report RUN.jsonl`` give the same bytes for the
same run: the page holds no clock, no path, nothing the record does not.

What is where (ids and classes are stable; the browser tests count them):

- ``header#head``: the lab, kernel version, loop, topology, the sysctls the run read (the ones
  the texts quote), the verdict (``.verdict.pass`` / ``.fail`` / ``.interrupted``).
- ``nav#stepper``: a cursor over the steps: buttons and the arrow keys (Home/End too). The
  cursor marks the step's segments, bands and moves in the ladder and the diagram
  (``.current``) and fades later ones (``.future``); no script, or print: everything shows.
- ``section#ladder``: one ``svg.ladder`` per captured connection, time running down: each
  captured segment is a ``g.seg`` (``data-seg-index`` = its index in the run's segments,
  ``data-step``), an arrow from sender to receiver with its label (relative seq/ack, length;
  the absolute numbers in its ``<title>``). ``g.seg.dropped`` stops short with the hold's
  name and nft counter; ``g.seg.retrans`` is dashed. ``rect.band`` along each lifeline: the
  state the record says that end was in (its reconciled transitions), from when to when.
- ``section#diagram``: ``svg.machine``, generated from ``tcp.machine.TRANSITIONS``: a
  ``g.node`` per state (``.seen`` when the kernel reported it in this run, ``.disagree`` when
  a step expected it and the kernel said otherwise), a ``path.edge`` per (from, to) pair of
  the table, and a ``path.taken`` (``data-side``, ``data-from``, ``data-to``) over the edge
  for each transition of the record; a move the table has no edge for (a child socket born
  in SYN_RECV) is listed in ``ul.offtable`` instead. ``g.here`` (one per step) puts each
  side's marker on its state; ``.expected`` markers show a disagreement.
- ``section#steps``: one ``article.step`` per step: action, expected vs kernel per side with
  each source's spelling (ss, psutil), timers and owners, holds, outcome, the explanation.

Geometry is plain arithmetic on fixed sizes (no text measuring): labels are short, and the
viewBox lets the browser scale each drawing to the column it gets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from handshake_lab.i18n.lang import in_lang, pick
from handshake_lab.i18n.machine import event_label
from handshake_lab.i18n.play import play_text
from handshake_lab.i18n.report import edge_word, report_label
from handshake_lab.i18n.states import unwrap
from handshake_lab.record.events import LabResult, LabStarted, SideObservation, StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.render.kernel_text import filler
from handshake_lab.tcp.machine import TRANSITIONS, Event
from handshake_lab.tcp.states import TcpState

if TYPE_CHECKING:
    from handshake_lab.lab.play import Control

__all__ = ["render_body", "render_html", "render_panel"]

HTML_LANG = {"en": "en", "zh": "zh-Hans"}
LIVE_ATTR = ' data-live="1"'


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10_000 else f"{value:.1f}"


def _side_kind(side: str) -> str:
    """``client``, ``server`` or ``listener``: the colour family of a side's name."""
    for kind in ("listener", "server", "client"):
        if side.startswith(kind):
            return kind
    return "client"


def _node_name(state: str) -> str:
    """The diagram node a Linux state is drawn as (a request socket is the RFC's SYN_RECV)."""
    return "SYN_RECV" if state == "NEW_SYN_RECV" else state


class _Words:
    """The page's words in one language, and the kernel's figures filled into lab texts."""

    def __init__(self, lang: str, kernel: Mapping[str, str | None]) -> None:
        self.lang = pick(lang)
        self.kernel = kernel
        self.fill = filler(kernel, self.lang)

    def __call__(self, key: str) -> str:
        return report_label(key, self.lang)

    def text(self, texts: Mapping[str, str] | None) -> str:
        return self.fill(in_lang(texts, self.lang)) if texts else ""

    def step_text(self, step: StepReport) -> str:
        """A step's explanation, its ``{rtt:SIDE}`` from the step's own ``tcp_info``."""
        fill = filler(self.kernel, self.lang, step.tcp_info)
        return fill(in_lang(step.explanation, self.lang)) if step.explanation else ""


def _paragraphs(text: str) -> list[str]:
    """The paragraphs of a lab text (blank-line separated), each joined into one line (no
    stray spaces between Chinese characters); list items stay lines of their own."""
    out: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        current: list[str] = []
        for line in lines:
            if line.startswith(("- ", "* ")) and current:
                out.append(unwrap("\n".join(current)))
                current = []
            current.append(line)
        if current:
            out.append(unwrap("\n".join(current)))
    return out


# ---------------------------------------------------------------------------------------------
# The header


def _header(started: LabStarted, result: LabResult | None, w: _Words, live: bool) -> str:
    versions = started.versions
    ports = ", ".join(f"{_e(slot)}={port}" for slot, port in started.ports.items())
    rows = [
        (w("kernel"), _e(versions.get("kernel", "?"))),
        (w("loop"), _e(versions.get("loop", started.loop))),
        (w("topology"), f"{_e(started.topology)} {_e(started.host)}"),
        (w("ports"), ports),
        (w("observers"), _e(", ".join(started.observers))),
    ]
    if started.evidence:
        rows.append(
            (w("evidence"), _e(", ".join(f"{k}: {v}" for k, v in started.evidence.items())))
        )
    facts = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    sysctls = "".join(
        f"<tr><td><code>{_e(key)}</code></td><td>"
        + (f"<code>{_e(value)}</code>" if value is not None else _e(w("no_sysctl")))
        + "</td></tr>"
        for key, value in started.kernel.items()
    )
    if result is None:
        kind, text = ("running", w("running")) if live else ("interrupted", w("interrupted"))
    elif result.passed:
        kind, text = "pass", f"{w('passed')} ({result.agreed}/{result.steps})"
    else:
        bad = ", ".join(result.disagreed_steps)
        kind, text = "fail", f"{w('failed')}: {bad} ({result.agreed}/{result.steps})"
    extra = ""
    if result is not None:
        checks = "".join(
            f'<li class="{"ok" if c.get("ok") else "bad"}">{_e(c.get("name"))}: '
            f"<code>{_e(c.get('detail'))}</code></li>"
            for c in result.checks
        )
        if checks:
            extra += f'<details class="checks" open><summary>{_e(w("wire"))}</summary>'
            extra += f"<ul>{checks}</ul></details>"
        if result.quiz is not None:
            q = result.quiz
            extra += (
                f'<p class="quiz">{_e(w("quiz"))}: {_e(q.get("correct"))}/{_e(q.get("asked"))}'
                f" ({_e(q.get('score'))}%)</p>"
            )
    intro = "".join(f"<p>{_e(p)}</p>" for p in _paragraphs(w.text(started.intro)))
    return (
        f'<header id="head"><h1>{_e(w("lab"))}: {_e(started.name)}'
        f' <span class="title">{_e(w.text(started.title))}</span></h1>'
        f'<p class="verdict {kind}" data-verdict="{kind}">{_e(text)}</p>'
        f'<div class="facts"><dl>{facts}</dl>'
        f'<table class="sysctls"><caption>{_e(w("sysctls"))}</caption>{sysctls}</table></div>'
        f"{extra}" + (f'<div class="intro">{intro}</div>' if intro else "") + "</header>"
    )


# ---------------------------------------------------------------------------------------------
# The ladder


@dataclass(frozen=True, slots=True)
class _Seg:
    index: int  # position in RunRecord.segments()
    step: int
    seg: Mapping[str, Any]
    retrans: bool
    counter: int | None  # the dropping hold's nft counter at that step


@dataclass(frozen=True, slots=True)
class _State:
    t_ms: float
    end: str  # "client" | "server"
    state: str
    step: int
    source: str


X_TIME = 58
X_CLIENT = 200
X_SERVER = 470
LADDER_W = 640
TOP = 58
ROW = 15
ARROW_ROW = 27
DROP_NOTE_ROW = 14
"""Extra room below a dropped segment's arrow: its "dropped: HOLD" note sits there."""
SLANT = 8
PAUSE_MS = 20.0
"""A pause at least this long between two rows is written beside the time axis."""


def _gap_extra(delta_ms: float) -> float:
    """Extra room for a pause between two rows: grows with the log of the pause, bounded."""
    if delta_ms <= 0.05:
        return 0.0
    return min(34.0, 7.0 * math.log10(1.0 + delta_ms / 0.05))


def _ladder_svg(
    conv: int,
    segs: list[_Seg],
    states: list[_State],
    w: _Words,
    ends: tuple[str, str],
    sides: Mapping[tuple[str, str], str],
) -> str:
    keys: list[tuple[float, int, int]] = [(s.seg["t_ms"], 0, s.index) for s in segs]
    keys += sorted({(st.t_ms, 1, 0) for st in states})
    keys.sort()
    dropped = {s.index for s in segs if s.seg.get("dropped")}
    y_of_seg: dict[int, float] = {}
    y_of_time: dict[float, float] = {}
    pauses: list[tuple[float, float]] = []
    y = float(TOP)
    prev_t: float | None = None
    last_arrow_y = -100.0
    arrow_gap = float(ARROW_ROW)
    for t, kind, index in keys:
        if prev_t is not None:
            if t == prev_t and kind == 1:
                y_of_time.setdefault(t, y)
                continue
            prev_y = y
            y += ROW + _gap_extra(t - prev_t)
            if kind == 0:
                y = max(y, last_arrow_y + arrow_gap)
            if t - prev_t >= PAUSE_MS:
                y = max(y, prev_y + 2 * ROW + 8)  # room for the pause's own label
                pauses.append(((prev_y + y) / 2, t - prev_t))
        prev_t = t
        if kind == 0:
            y_of_seg[index] = y
            last_arrow_y = y
            arrow_gap = ARROW_ROW + (DROP_NOTE_ROW if index in dropped else 0)
            y_of_time.setdefault(t, y)
        else:
            y_of_time.setdefault(t, y)
    y_end = y + 24
    height = int(y_end + 14)
    parts: list[str] = [
        f'<svg class="ladder" data-conv="{conv}" viewBox="0 0 {LADDER_W} {height}" '
        f'width="{LADDER_W}" height="{height}" role="img" aria-label="{_e(w("ladder"))}">'
    ]
    client, server = ends
    names = {
        "client": sides.get((client, server), w("client")),
        "server": sides.get((server, client), w("server")),
    }
    if client == server:  # one socket connected to itself (simultaneous open)
        names = {"client": w("self_send"), "server": w("self_recv")}
    for x, who, addr in ((X_CLIENT, "client", client), (X_SERVER, "server", server)):
        parts.append(
            f'<text class="end-name {who}" x="{x}" y="18" text-anchor="middle">'
            f"{_e(names[who])}</text>"
            f'<text class="end-addr" x="{x}" y="32" text-anchor="middle">{_e(addr)}</text>'
        )
    parts.append(f'<text class="axis" x="{X_TIME}" y="46" text-anchor="end">t (ms)</text>')
    # Cursor spans: the rows of each step, behind everything.
    by_step: dict[int, list[float]] = {}
    for s in segs:
        by_step.setdefault(s.step, []).extend((y_of_seg[s.index], y_of_seg[s.index] + SLANT))
    for st in states:
        by_step.setdefault(st.step, []).append(y_of_time[st.t_ms])
    for step, ys in sorted(by_step.items()):
        top, bottom = min(ys) - 14, max(ys) + 6
        parts.append(
            f'<rect class="span" data-step="{step}" x="2" y="{top:.1f}" '
            f'width="{LADDER_W - 4}" height="{bottom - top:.1f}" rx="4"/>'
        )
    for y_mid, delta in pauses:
        parts.append(
            f'<text class="pause" x="{X_TIME}" y="{y_mid + 3:.1f}" text-anchor="end">'
            f"+{_ms(delta)}</text>"
        )
    # Bands: each end's states, from the record's reconciled transitions.
    for end, x in (("client", X_CLIENT), ("server", X_SERVER)):
        mine = [st for st in states if st.end == end]
        mine.sort(key=lambda st: st.t_ms)
        for i, st in enumerate(mine):
            y0 = y_of_time[st.t_ms]
            y1 = y_of_time[mine[i + 1].t_ms] if i + 1 < len(mine) else y_end
            label_x = x - 12 if end == "client" else x + 12
            anchor = "end" if end == "client" else "start"
            tip = f"{w(end)}: {st.state} @ {_ms(st.t_ms)} ms ({st.source})"
            parts.append(
                f'<g class="band-g" data-step="{st.step}" data-end="{end}" '
                f'data-state="{_e(st.state)}"><title>{_e(tip)}</title>'
                f'<rect class="band st-{_e(st.state)}" x="{x - 5}" y="{y0:.1f}" width="10" '
                f'height="{max(y1 - y0, 2):.1f}"/>'
                f'<text class="state-label" x="{label_x}" y="{y0 + 4:.1f}" '
                f'text-anchor="{anchor}">{_e(st.state)}</text></g>'
            )
    for x in (X_CLIENT, X_SERVER):
        parts.append(
            f'<line class="lifeline" x1="{x}" y1="{TOP - 12}" x2="{x}" y2="{y_end:.1f}"/>'
        )
    for s in segs:
        parts.append(_arrow(s, y_of_seg[s.index], w))
    parts.append("</svg>")
    return "".join(parts)


def _arrow(s: _Seg, y: float, w: _Words) -> str:
    seg = s.seg
    to_server = seg.get("sender") == "client"
    x0, x1 = (X_CLIENT, X_SERVER) if to_server else (X_SERVER, X_CLIENT)
    dropped = bool(seg.get("dropped"))
    y1 = y + SLANT
    classes = (
        "seg"
        + (" dropped" if dropped else "")
        + (" retrans" if s.retrans else "")
        + (" forged" if seg.get("forged") else "")
    )
    if dropped:
        x_end = x0 + (x1 - x0) * 0.62
        y_end = y + SLANT * 0.62
    else:
        x_end, y_end = x1 - (6 if to_server else -6), y1
    tip = (
        f"{seg.get('src')} > {seg.get('dst')}  {seg.get('flags')}  seq={seg.get('seq')} "
        f"ack={seg.get('ack')} len={seg.get('len')} win={seg.get('win')}  "
        f"t={_ms(float(seg['t_ms']))} ms"
    )
    if dropped:
        tip += f"  {w('dropped')}: {seg.get('hold')}"
    if seg.get("forged"):
        tip += f"  ({w('forged')})"
    if s.retrans:
        tip += f"  ({w('retransmission')})"
    mid = (x0 + x_end) / 2 if dropped else (X_CLIENT + X_SERVER) / 2
    label = str(seg.get("label", ""))
    out = [
        f'<g class="{classes}" data-seg-index="{s.index}" data-step="{s.step}" '
        f'data-sender="{_e(seg.get("sender"))}"><title>{_e(tip)}</title>',
        f'<text class="time" x="{X_TIME}" y="{y + 4:.1f}" text-anchor="end">'
        f"{_ms(float(seg['t_ms']))}</text>",
        f'<line class="shaft" x1="{x0}" y1="{y:.1f}" x2="{x_end:.1f}" y2="{y_end:.1f}"/>',
    ]
    if dropped:
        out.append(
            f'<path class="x" d="M{x_end - 5:.1f},{y_end - 5:.1f}l10,10m0,-10l-10,10"/>'
            f'<text class="drop-note" x="{x_end:.1f}" y="{y_end + 13:.1f}" '
            f'text-anchor="middle">{_e(w("dropped"))}: {_e(seg.get("hold"))}'
            + (f" (nft {s.counter})" if s.counter is not None else "")
            + "</text>"
        )
    else:
        direction = 1 if to_server else -1
        tip_x, tip_y = x1, y1
        back = tip_x - direction * 9
        out.append(
            f'<path class="head" d="M{tip_x},{tip_y:.1f}L{back},{tip_y - 4.5:.1f}'
            f'L{back},{tip_y + 4.5:.1f}z"/>'
        )
    if s.retrans:
        label += f"  \u21bb {w('retransmission')}"
    if seg.get("forged"):
        label += f"  ({w('forged')})"
    out.append(
        f'<text class="seg-label" x="{mid}" y="{y - 3 + SLANT / 2:.1f}" '
        f'text-anchor="middle">{_e(label)}</text></g>'
    )
    return "".join(out)


def _ladder_section(record: RunRecord, w: _Words) -> str:
    retrans = record.retransmissions()
    segs_by_conv: dict[int, list[_Seg]] = {}
    index = 0
    for step in record.steps:
        for seg in step.segments:
            conv = seg.get("conv")
            hold = seg.get("hold")
            counter = step.holds.get(str(hold), {}).get("dropped") if hold else None
            if isinstance(conv, int):
                segs_by_conv.setdefault(conv, []).append(
                    _Seg(index, step.index, seg, index in retrans, counter)
                )
            index += 1
    when: dict[tuple[float, str], tuple[int, str]] = {}
    for step in record.steps:
        for tr in step.transitions:
            key = (float(tr["t_ms"]), str(tr["new"]))
            when.setdefault(key, (step.index, str(tr.get("source", ""))))
    body: list[str] = [
        f'<section id="ladder"><h2>{_e(w("ladder"))}</h2>',
        f'<p class="note">{_e(w("ladder_note"))}</p>',
    ]
    sides: dict[tuple[str, str], str] = {}  # (local, remote) -> the side the record names
    for step in record.steps:
        for obs in step.observed.values():
            if obs.local and obs.remote:
                sides.setdefault((obs.local, obs.remote), obs.side)
    views = record.conversations()
    if not views:
        body.append(f'<p class="empty">{_e(w("no_segments"))}</p>')
    for view in views:
        states = [
            _State(t, end, state, *when.get((t, state), (0, ""))) for t, end, state in view.states
        ]
        body.append(
            f'<h3 class="conv">{_e(w("conversation"))} {view.index + 1}: '
            f"{_e(view.client)} \u2194 {_e(view.server)}</h3>"
        )
        body.append(
            _ladder_svg(
                view.index,
                segs_by_conv.get(view.index, []),
                states,
                w,
                (view.client, view.server),
                sides,
            )
        )
    body.append("</section>")
    return "".join(body)


# ---------------------------------------------------------------------------------------------
# The state diagram (RFC 9293 Figure 5's arrangement; the edges come from the table)

NODE_W = 112
NODE_H = 28
MACHINE_W = 640
MACHINE_H = 600
NODES: dict[str, tuple[str, float, float]] = {
    # node id: (state, x, y) of its centre. CLOSE is drawn twice, as in the RFC's figure: at
    # the top where connections begin and at the bottom where they end.
    "CLOSE": ("CLOSE", 320, 30),
    "LISTEN": ("LISTEN", 150, 110),
    "SYN_SENT": ("SYN_SENT", 490, 110),
    "SYN_RECV": ("SYN_RECV", 150, 200),
    "ESTABLISHED": ("ESTABLISHED", 320, 270),
    "FIN_WAIT1": ("FIN_WAIT1", 110, 350),
    "CLOSE_WAIT": ("CLOSE_WAIT", 530, 350),
    "FIN_WAIT2": ("FIN_WAIT2", 110, 450),
    "CLOSING": ("CLOSING", 320, 420),
    "LAST_ACK": ("LAST_ACK", 530, 450),
    "TIME_WAIT": ("TIME_WAIT", 260, 530),
    "CLOSE.end": ("CLOSE", 490, 565),
}
OPENING = frozenset({"CLOSE", "LISTEN", "SYN_SENT", "SYN_RECV"})
MINOR_EVENTS = frozenset({Event.RCV_RST, Event.ABORT})
BENDS: dict[tuple[str, str], float] = {
    ("SYN_RECV", "FIN_WAIT1"): 30.0,
    ("SYN_RECV", "CLOSE_WAIT"): -45.0,
    ("FIN_WAIT1", "TIME_WAIT"): 20.0,
    ("SYN_SENT", "CLOSE"): 18.0,
    ("LISTEN", "CLOSE"): 18.0,
    ("CLOSE", "LISTEN"): 18.0,
    ("SYN_RECV", "LISTEN"): 22.0,
    ("LISTEN", "SYN_RECV"): 22.0,
}
"""Curvature (px, to the left of the direction of travel) where a straight line would cross a
node or its reverse edge."""
LABEL_AT: dict[tuple[str, str], float] = {("SYN_RECV", "CLOSE_WAIT"): 0.68}
"""Where along an edge its label sits, where the middle is crowded (default 0.5)."""


def _target_node(src: str, dst: str) -> str:
    if dst == "CLOSE" and src not in OPENING:
        return "CLOSE.end"
    return dst


@dataclass(frozen=True, slots=True)
class _Edge:
    src: str  # node ids
    dst: str
    events: tuple[Event, ...]
    sends: tuple[str, ...]

    @property
    def minor(self) -> bool:
        return all(e in MINOR_EVENTS for e in self.events)


def _edges() -> list[_Edge]:
    grouped: dict[tuple[str, str], list[tuple[Event, str]]] = {}
    for (state, event), tr in TRANSITIONS.items():
        if tr.next_state is state or state is TcpState.NEW_SYN_RECV:
            continue  # self-loops (a re-ACK, a duplicate FIN) live in the node's tooltip
        key = (state.name, _target_node(state.name, tr.next_state.name))
        grouped.setdefault(key, []).append((event, tr.sends_text))
    return [
        _Edge(src, dst, tuple(e for e, _ in evs), tuple(s for _, s in evs))
        for (src, dst), evs in grouped.items()
    ]


def _border(cx: float, cy: float, dx: float, dy: float) -> tuple[float, float]:
    """Where the ray from the centre of a node in direction (dx, dy) leaves its box."""
    hw, hh = NODE_W / 2 + 2, NODE_H / 2 + 2
    scale = min(hw / abs(dx) if dx else math.inf, hh / abs(dy) if dy else math.inf)
    return cx + dx * scale, cy + dy * scale


def _curve(src: str, dst: str, bend: float, at: float = 0.5) -> tuple[str, float, float]:
    """An SVG path from node to node (quadratic, ``bend`` px off the straight line) and the
    point at ``at`` along it (0: start, 1: end), for the label."""
    _, x0, y0 = NODES[src]
    _, x1, y1 = NODES[dst]
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = (y1 - y0) / length, -(x1 - x0) / length  # left of the direction of travel
    cx, cy = (x0 + x1) / 2 + nx * bend * 2, (y0 + y1) / 2 + ny * bend * 2
    sx, sy = _border(x0, y0, cx - x0, cy - y0)
    ex, ey = _border(x1, y1, cx - x1, cy - y1)
    a, b, c = (1 - at) ** 2, 2 * at * (1 - at), at**2
    mx = a * sx + b * cx + c * ex
    my = a * sy + b * cy + c * ey
    return f"M{sx:.1f},{sy:.1f}Q{cx:.1f},{cy:.1f} {ex:.1f},{ey:.1f}", mx, my


@dataclass(frozen=True, slots=True)
class _Move:
    step: int
    side: str
    old: str
    new: str
    note: str


def _moves(record: RunRecord) -> list[_Move]:
    out: list[_Move] = []
    for step in record.steps:
        for tr in step.transitions:
            if tr.get("old") == tr.get("new"):
                continue  # a socket handed to a timewait socket in the same state: no move
            note = str(tr.get("note") or tr.get("cause") or "")
            out.append(_Move(step.index, str(tr["side"]), str(tr["old"]), str(tr["new"]), note))
    return out


def _diagram_section(record: RunRecord, w: _Words) -> str:
    edges = _edges()
    by_pair = {(e.src, e.dst): e for e in edges}
    seen: set[str] = set()
    for step in record.steps:
        for obs in step.observed.values():
            seen.add(_node_name(obs.state))
        for tr in step.transitions:
            seen.add(_node_name(str(tr["new"])))
            seen.add(_node_name(str(tr["old"])))
    missed: set[str] = set()
    for step in record.steps:
        for side, want in step.expected.items():
            seen_obs = step.observed.get(side)
            if seen_obs is not None and seen_obs.state != want:
                missed.add(_node_name(want))
    parts = [
        f'<section id="diagram"><h2>{_e(w("diagram"))}</h2>',
        f'<p class="note">{_e(w("diagram_note"))}</p>',
        f'<svg class="machine" viewBox="0 0 {MACHINE_W} {MACHINE_H}" width="{MACHINE_W}" '
        f'height="{MACHINE_H}" role="img" aria-label="{_e(w("diagram"))}"><defs>'
        '<marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0L10,5L0,10z"/></marker>'
        "</defs>",
    ]
    labels: list[str] = []  # drawn over the paths, so a highlighted path never hides one
    for edge in edges:
        bend = BENDS.get((edge.src, edge.dst), 0.0)
        d, mx, my = _curve(edge.src, edge.dst, bend, LABEL_AT.get((edge.src, edge.dst), 0.5))
        tip = "; ".join(
            event_label(ev, w.lang) + (f" / {sends}" if sends else "")
            for ev, sends in zip(edge.events, edge.sends, strict=True)
        )
        tip = f"{NODES[edge.src][0]} \u2192 {NODES[edge.dst][0]}: {tip}"
        cls = "edge minor" if edge.minor else "edge"
        parts.append(
            f'<g class="{cls}-g"><title>{_e(tip)}</title>'
            f'<path class="{cls}" d="{d}" marker-end="url(#ah)"/>'
        )
        parts.append("</g>")
        if not edge.minor:
            words = [edge_word(ev, w.lang) for ev in edge.events if ev not in MINOR_EVENTS]
            sends = next((s for s in edge.sends if s), "")
            text = "/".join(dict.fromkeys(words)) + (f" \u2192 {sends}" if sends else "")
            labels.append(
                f'<text class="edge-label" x="{mx:.1f}" y="{my + 3:.1f}" '
                f'text-anchor="middle">{_e(text)}</text>'
            )
    # This run's path: one overlay per transition of the record that the table has an edge for.
    offtable: list[_Move] = []
    lane: dict[tuple[str, str], int] = {}
    for move in _moves(record):
        src = _node_name(move.old)
        dst = _target_node(src, _node_name(move.new))
        if (src, dst) not in by_pair:
            offtable.append(move)
            continue
        kind = _side_kind(move.side)
        n = lane.setdefault(
            (kind, f"{src}>{dst}"), len([k for k in lane if k[1] == f"{src}>{dst}"])
        )
        bend = BENDS.get((src, dst), 0.0) + (n * 5.0 - 2.5 if n else 0.0)
        d, _, _ = _curve(src, dst, bend)
        parts.append(
            f'<path class="taken side-{kind}" data-side="{_e(move.side)}" '
            f'data-from="{_e(move.old)}" data-to="{_e(move.new)}" data-step="{move.step}" '
            f'd="{d}" marker-end="url(#ah)">'
            f"<title>{_e(move.side)}: {_e(move.old)} \u2192 {_e(move.new)} ({_e(w('step'))} "
            f"{move.step})</title></path>"
        )
    parts.extend(labels)
    for node_id, (state, x, y) in NODES.items():
        cls = "node"
        if state in seen:
            cls += " seen"
        if state in missed and state not in seen:
            cls += " disagree"
        elif state in missed:
            cls += " disagree seen"
        loops = [
            event_label(ev, w.lang) + (f" / {tr.sends_text}" if tr.sends else "")
            for (st, ev), tr in TRANSITIONS.items()
            if st.name == state and tr.next_state is st
        ]
        tip = state + (": \u21ba " + "; ".join(loops) if loops and node_id != "CLOSE" else "")
        parts.append(
            f'<g class="{cls}" data-state="{state}" data-node="{node_id}"><title>{_e(tip)}</title>'
            f'<rect x="{x - NODE_W / 2}" y="{y - NODE_H / 2}" width="{NODE_W}" '
            f'height="{NODE_H}" rx="7"/>'
            f'<text x="{x}" y="{y + 4.5}" text-anchor="middle">{state}</text></g>'
        )
    parts.append(_markers(record, w))
    parts.append("</svg>")
    legend = [
        f'<li><span class="key side-client"></span>{_e(w("client"))}</li>',
        f'<li><span class="key side-server"></span>{_e(w("server"))}</li>',
        f'<li><span class="key side-listener"></span>{_e(w("listener"))}</li>',
        f'<li><span class="key seen"></span>{_e(w("seen"))}</li>',
        f'<li><span class="key disagree"></span>{_e(w("disagreement"))}</li>',
    ]
    parts.append(f'<ul class="legend">{"".join(legend)}</ul>')
    if offtable:
        items = "".join(
            f'<li data-side="{_e(m.side)}" data-from="{_e(m.old)}" data-to="{_e(m.new)}" '
            f'data-step="{m.step}">{_e(m.side)}: {_e(m.old)} \u2192 {_e(m.new)}'
            + (f" <small>({_e(m.note)})</small>" if m.note else "")
            + "</li>"
            for m in offtable
        )
        parts.append(f'<p class="note">{_e(w("offtable"))}</p><ul class="offtable">{items}</ul>')
    parts.append("</section>")
    return "".join(parts)


def _markers(record: RunRecord, w: _Words) -> str:
    """Per step, each side's marker on the node of its state (and, where the kernel
    disagreed, a red marker on the expected state). Only the cursor's step shows."""
    parts: list[str] = []
    for step in record.steps:
        slots: dict[str, int] = {}
        items: list[str] = []

        def place(
            node_id: str,
            letter: str,
            cls: str,
            tip: str,
            slots: dict[str, int] = slots,
            items: list[str] = items,
        ) -> None:
            n = slots.get(node_id, 0)
            slots[node_id] = n + 1
            _, x, y = NODES[node_id]
            mx, my = x + NODE_W / 2 - 8 - n * 17, y - NODE_H / 2 - 5
            items.append(
                f'<g class="marker {cls}"><title>{_e(tip)}</title>'
                f'<circle cx="{mx}" cy="{my}" r="8"/>'
                f'<text x="{mx}" y="{my + 3.5}" text-anchor="middle">{letter}</text></g>'
            )

        for side, obs in step.observed.items():
            node = _node_name(obs.state)
            kind = _side_kind(side)
            if node in NODES:
                node_id = "CLOSE.end" if node == "CLOSE" and step.index > 1 else node
                place(node_id, kind[0].upper(), f"side-{kind}", f"{side}: {obs.state}")
            want = step.expected.get(side)
            if want is not None and want != obs.state and _node_name(want) in NODES:
                place(
                    _node_name(want),
                    kind[0].upper(),
                    "expected",
                    f"{side}: {w('expected')} {want}, {w('state')} {obs.state}",
                )
        parts.append(f'<g class="here" data-step="{step.index}">{"".join(items)}</g>')
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# The steps


def _observation_row(side: str, want: str | None, obs: SideObservation, w: _Words) -> str:
    ok = want is None or (want == obs.state and obs.agree)
    cls = "ok" if ok else "bad"
    sources = "".join(
        f'<td class="src" data-source="{_e(name)}">{_e(value if value is not None else "-")}</td>'
        for name, value in obs.sources.items()
    )
    where: list[str] = []
    arrow = obs.tuple_text()
    if arrow:
        where.append(arrow)
    elif not obs.sources:
        where.append(w("no_socket"))
    if obs.timer:
        remaining = obs.timer.get("remaining")
        rem = f" {remaining:.1f}s" if isinstance(remaining, int | float) else ""
        where.append(f"timer {obs.timer.get('name')}{rem}")
    if obs.pid is not None:
        where.append(f"pid {obs.pid}")
    elif obs.state not in {"ABSENT", "LISTEN"} and "psutil" in obs.sources and obs.local:
        where.append(w("no_pid"))
    if obs.note:
        where.append(obs.note)
    agree = "" if obs.agree else f' <span class="differ">{_e(w("sources_differ"))}</span>'
    return (
        f'<tr class="{cls}" data-side="{_e(side)}"><th>{_e(side)}</th>'
        f'<td>{_e(want or "-")}</td><td class="kstate">{_e(obs.state)}{agree}</td>{sources}'
        f'<td class="where">{"<br>".join(_e(x) for x in where)}</td></tr>'
    )


def _arg(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} chars)"


def _step_article(
    step: StepReport, observers: list[str], w: _Words, *, counted: bool = True
) -> str:
    args = " ".join(f"{k}={_arg(v)}" for k, v in step.args.items())
    of_total = f"/{step.total_steps or '?'}" if counted else ""
    verdict = w("agrees") if step.agrees else w("disagrees")
    cls = "agree" if step.agrees else "disagree"
    names: list[str] = list(observers)
    for obs in step.observed.values():
        names.extend(n for n in obs.sources if n not in names)
    head_sources = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for side, obs in step.observed.items():
        ordered = SideObservation(
            obs.side,
            obs.state,
            obs.local,
            obs.remote,
            {n: obs.sources.get(n) for n in names},
            obs.agree,
            obs.timer,
            obs.pid,
            obs.note,
            obs.mapped,
        )
        rows.append(_observation_row(side, step.expected.get(side), ordered, w))
    table = (
        f'<table class="sides"><thead><tr><th>{_e(w("side"))}</th><th>{_e(w("expected"))}</th>'
        f"<th>{_e(w('state'))}</th>{head_sources}<th>{_e(w('where'))}</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    lines: list[str] = []
    if step.outcome is not None or step.expected_outcome is not None:
        text = f"{w('outcome')}: {step.outcome}"
        if step.expected_outcome is not None and step.expected_outcome != step.outcome:
            text += f" ({w('expected')} {step.expected_outcome})"
        lines.append(f'<li class="outcome">{_e(text)}</li>')
    if step.data is not None:
        lines.append(
            f'<li class="data">{_e(w("received"))}: <code>{_e(_arg(step.data))}</code></li>'
        )
    if step.facts:
        facts = ", ".join(f"{k}={v}" for k, v in step.facts.items())
        lines.append(f'<li class="facts">{_e(w("facts"))}: {_e(facts)}</li>')
    for hold_id, hold in step.holds.items():
        state = w("active") if hold.get("active") else w("released")
        counter = w("hold_line").format(n=hold.get("dropped"))
        lines.append(
            f'<li class="hold" data-hold="{_e(hold_id)}">{_e(w("holds"))}: <b>{_e(hold_id)}</b> '
            f"({_e(hold.get('kind'))} @ {_e(hold.get('at'))}, {_e(state)}): {_e(counter)}</li>"
        )
    for problem in step.mismatches:
        lines.append(f'<li class="mismatch">{_e(problem)}</li>')
    if step.segments:
        lines.append(
            f'<li class="count">{_e(w("segments"))}: {len(step.segments)}'
            + "".join(
                f' <code class="seg-ref">{_e(s.get("label"))}'
                + (f" \u2715{_e(w('dropped'))}" if s.get("dropped") else "")
                + "</code>"
                for s in step.segments[:12]
            )
            + (" ..." if len(step.segments) > 12 else "")
            + "</li>"
        )
    for tr in step.transitions:
        why = str(tr.get("cause") or "")
        why = w("application call") if why == "application call" else why
        cause = f" ({w('after')} {why})" if why else ""
        if tr.get("source") == "table":
            cause = f" ({w('seen_in_table')})"
        elif tr.get("traced"):
            cause += f" [{w('traced_as')} \u2192 {tr['traced']}]"
        lines.append(
            f'<li class="tr">{_ms(float(tr["t_ms"]))} ms {_e(tr["side"])}: {_e(tr["old"])} '
            f"\u2192 {_e(tr['new'])}{_e(cause)}</li>"
        )
    why = "".join(f"<p>{_e(p)}</p>" for p in _paragraphs(w.step_text(step)))
    return (
        f'<article class="step {cls}" id="step-{step.index}" data-step="{step.index}">'
        f'<h3><span class="num">{_e(w("step"))} {step.index}{of_total}</span> '
        f'<span class="action">{_e(step.actor)}: {_e(step.action)}</span> '
        f'<span class="args">{_e(args)}</span>'
        f' <span class="badge {cls}">{_e(verdict)}</span></h3>'
        f"{table}"
        + (f'<ul class="facts">{"".join(lines)}</ul>' if lines else "")
        + (f'<div class="why"><b>{_e(w("why"))}:</b> {why}</div>' if why else "")
        + "</article>"
    )


# ---------------------------------------------------------------------------------------------
# The page


def render_body(record: RunRecord | None, lang: str, *, live: bool = False) -> str:
    """The part of the page a live view replaces as the run goes (everything but the shell)."""
    if record is None:
        w = _Words(lang, {})
        return f'<p class="waiting">{_e(w("waiting"))}</p>'
    w = _Words(lang, record.started.kernel)
    # A lab has a fixed number of steps ("Step 2/5"); a play session has none ("Step 2").
    counted = record.started.steps > 0
    steps = "".join(
        _step_article(s, record.started.observers, w, counted=counted) for s in record.steps
    )
    return (
        _header(record.started, record.result, w, live)
        + '<div class="cols"><div class="figures">'
        + _ladder_section(record, w)
        + _diagram_section(record, w)
        + "</div>"
        + f'<section id="steps" data-total="{record.started.steps}"><h2>{_e(w("steps"))}</h2>'
        + f"{steps}</section></div>"
        + f"<footer>{_e(w('generated'))} {_e(record.started.versions.get('handshake_lab', ''))}"
        + "</footer>"
    )


PANEL_ENDS = ("client", "server", "listener", "session")
SEND_DEFAULT = "hello"


def render_panel(controls: Sequence[Control], states: Mapping[str, str], lang: str) -> str:
    """``play --browser``'s buttons, one group per end (its state as the kernel last showed
    it), each ``button[data-cmd]`` the command line it sends; a disabled one says why in its
    ``title``. The page replaces this part after every command (``#play-controls``)."""
    groups: list[str] = []
    for end in PANEL_ENDS:
        mine = [c for c in controls if c.end == end]
        name = play_text("session", lang) if end == "session" else end
        state = states.get(end)
        head = f"<h3>{_e(name)}" + (
            f' <span class="kstate" id="state-{end}">{_e(state)}</span>' if state else ""
        )
        parts = [head + "</h3>"]
        if any(c.text for c in mine):
            parts.append(
                f'<input type="text" id="text-{end}" maxlength="200" value="{SEND_DEFAULT}" '
                f'aria-label="{_e(play_text("text_field", lang))}" '
                f'placeholder="{_e(play_text("text_field", lang))}">'
            )
        for c in mine:
            ident = "cmd-" + "-".join(f"{end} {c.label}".split())
            attrs = f' id="{ident}" data-cmd="{_e(c.command)}" data-end="{end}"'
            if c.text:
                attrs += " data-text"
            if c.reason:
                attrs += f' disabled title="{_e(c.reason)}"'
            else:
                attrs += f' title="{_e(c.command)}"'
            parts.append(f'<button type="button"{attrs}>{_e(c.label)}</button>')
        if end == "session":
            parts.append(
                f'<a id="download" href="lab.toml" download="played.toml">'
                f"{_e(play_text('download', lang))}</a>"
            )
        groups.append(f'<div class="end side-{end}">{"".join(parts)}</div>')
    return "".join(groups)


def _panel_section(panel: str, lang: str) -> str:
    return (
        f'<section id="play" aria-label="{_e(play_text("panel", lang))}">'
        f"<h2>{_e(play_text('panel', lang))}</h2>"
        f'<p class="note">{_e(play_text("panel_note", lang))}</p>'
        f'<div id="play-controls">{panel}</div>'
        f'<ol id="play-log" aria-label="{_e(play_text("messages", lang))}"></ol></section>'
    )


def render_html(
    record: RunRecord | None, lang: str, *, live: bool = False, panel: str | None = None
) -> str:
    """The whole page: one file, no external resource (inline CSS, SVG and script).
    ``panel``: ``play --browser``'s buttons (``render_panel``), above the report."""
    w = _Words(lang, record.started.kernel if record else {})
    name = record.started.name if record else ""
    buttons = "".join(
        f'<button type="button" data-go="{go}" title="{_e(w(go))}" aria-label="{_e(w(go))}">'
        f"{sym}</button>"
        for go, sym in (
            ("first", "\u00ab"),
            ("prev", "\u2039"),
            ("next", "\u203a"),
            ("last", "\u00bb"),
        )
    )
    live_controls = (
        f'<button type="button" id="run-next" hidden>{_e(w("run_next"))} <span></span></button>'
        f'<span id="live-status" data-ended="{_e(w("ended"))}">{_e(w("live"))}</span>'
        if live
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{HTML_LANG[w.lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>handshake-lab: {_e(name)}</title><style>{CSS}</style></head>"
        f"<body{LIVE_ATTR if live else ''}>"
        f'<nav id="stepper" aria-label="{_e(w("steps"))}">{buttons}'
        f'<span id="cursor-label" data-word="{_e(w("step"))}"></span>'
        f'<span class="keys">{_e(w("keys"))}</span>{live_controls}</nav>'
        + (_panel_section(panel, lang) if panel is not None else "")
        + f'<main id="report">{render_body(record, lang, live=live)}</main>'
        f"<script>{JS}</script></body></html>\n"
    )


CSS = """
:root{--fg:#1d2430;--muted:#5b6575;--line:#c9d1dc;--bg:#fff;--client:#1f6fd1;
--server:#d9730d;--listener:#2e8b57;--bad:#c8102e;--seen:#e3edf9;--cur:#fff4c2}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:var(--bg);font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Noto Sans","Helvetica Neue",Arial,"PingFang SC","Hiragino Sans GB",
"Microsoft YaHei","Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei",sans-serif}
code,.where,.src,.kstate,svg text{font-family:ui-monospace,"SFMono-Regular","DejaVu Sans Mono",
Menlo,Consolas,"Noto Sans Mono CJK SC","WenQuanYi Micro Hei Mono",monospace}
h1{font-size:20px;margin:0 0 4px}h1 .title{font-weight:400;color:var(--muted)}
h2{font-size:16px;margin:14px 0 4px}h3{font-size:14px;margin:8px 0 4px}
#stepper{position:sticky;top:0;z-index:5;display:flex;gap:6px;align-items:center;
padding:6px 12px;background:#f3f5f8;border-bottom:1px solid var(--line)}
#stepper button{font-size:15px;min-width:34px;padding:2px 8px;cursor:pointer}
#cursor-label{font-weight:600;margin-left:6px}#stepper .keys{color:var(--muted);font-size:12px}
#run-next{margin-left:auto;font-size:14px!important;background:#1f6fd1;color:#fff;border:0;
border-radius:4px;padding:4px 12px}#live-status{color:var(--muted);font-size:12px}
main{padding:8px 14px}
#play{margin:6px 14px;padding:4px 10px 6px;border:1px solid var(--line);border-radius:4px;
background:#fafbfc}#play h2{margin:2px 0}#play .note{margin:0 0 4px}
#play-controls{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:6px 14px}
#play .end h3{margin:4px 0;border-bottom:3px solid var(--line)}#play .end.side-client h3{
border-color:var(--client)}#play .end.side-server h3{border-color:var(--server)}
#play .end.side-listener h3{border-color:var(--listener)}#play .end .kstate{font-weight:400;
font-size:12px;color:var(--muted)}#play .end input{width:100%;margin:0 0 4px;font:inherit}
#play button{margin:0 4px 4px 0;padding:2px 8px;cursor:pointer;font:inherit;font-size:13px}
#play button:disabled{cursor:not-allowed;opacity:.45}#play #download{font-size:13px;
white-space:nowrap}
#play-log{margin:4px 0 0;padding-left:20px;font-size:12.5px;max-height:7.5em;overflow:auto}
#play-log li:first-child{font-weight:600}#play-log li.error{color:var(--bad)}
@media (max-width:900px){#play-controls{grid-template-columns:1fr 1fr}}
header .facts{display:flex;flex-wrap:wrap;gap:6px 28px;align-items:flex-start}
header dl{display:grid;grid-template-columns:auto auto;gap:0 10px;margin:4px 0}
header dt{color:var(--muted)}header dd{margin:0}
.sysctls{border-collapse:collapse;font-size:12px}.sysctls caption{text-align:left;
color:var(--muted)}.sysctls td{padding:0 8px 0 0}
.verdict{display:inline-block;font-weight:600;padding:3px 10px;border-radius:4px;margin:4px 0}
.verdict.pass{background:#e3f4e8;color:#17692f}.verdict.fail{background:#fde5e8;color:var(--bad)}
.verdict.interrupted,.verdict.running{background:#fff4c2;color:#6b5200}
.intro{max-width:70em;color:var(--muted)}.note{color:var(--muted);font-size:12px;margin:2px 0}
.cols{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:18px}
.figures{position:sticky;top:44px;align-self:start;max-height:calc(100vh - 50px);overflow:auto}
svg{max-width:100%;height:auto;display:block}svg text{font-size:11px;fill:var(--fg)}
.ladder .lifeline{stroke:#7a8494;stroke-width:1.5}
.ladder .end-name{font-weight:700;font-size:13px}.ladder .end-name.client{fill:var(--client)}
.ladder .end-name.server{fill:var(--server)}.ladder .end-addr,.ladder .axis,.ladder .time,
.ladder .pause{fill:var(--muted);font-size:10px}.ladder .pause{font-style:italic}
.seg .shaft{stroke:#222;stroke-width:1.4}.seg .head{fill:#222}
.seg.dropped .shaft{stroke:var(--bad)}.seg .x{stroke:var(--bad);stroke-width:2.5}
.seg .drop-note{fill:var(--bad);font-size:10px}
.seg.forged .shaft{stroke:var(--bad);stroke-dasharray:2 2}.seg.forged .head{fill:var(--bad)}
.seg.retrans .shaft{stroke-dasharray:5 3}.seg-label{paint-order:stroke;stroke:#fff;
stroke-width:3px}.state-label{font-size:10.5px;font-weight:600}
.band{fill:#b9c3cf}.st-ESTABLISHED{fill:#3aa757}.st-SYN_SENT,.st-SYN_RECV,.st-NEW_SYN_RECV{
fill:#8fc1ff}.st-FIN_WAIT1{fill:#f2b84b}.st-FIN_WAIT2{fill:#e39b1b}.st-CLOSING{fill:#c77dff}
.st-TIME_WAIT{fill:#8e6cef}.st-CLOSE_WAIT{fill:#ef7d5b}.st-LAST_ACK{fill:#d9534f}
.st-CLOSE,.st-ABSENT{fill:#c9d1dc}.st-LISTEN{fill:#6cc08b}
.span{fill:transparent}.span.current{fill:var(--cur)}
.future{opacity:.18}.here{display:none}.here.current{display:inline}
.machine .edge{fill:none;stroke:#9aa4b2;stroke-width:1.2}.machine .edge.minor{
stroke-dasharray:3 3;stroke:#c3c9d2}.machine marker path{fill:#8a94a3}
.machine .edge-label{font-size:9.5px;fill:#4a5361;paint-order:stroke;stroke:#fff;stroke-width:3px}
.machine .node rect{fill:#fff;stroke:#7a8494;stroke-width:1.2}.machine .node text{
font-weight:600;font-size:11.5px}.machine .node.seen rect{fill:var(--seen);stroke:#1d2430;
stroke-width:1.8}.machine .node.disagree rect{stroke:var(--bad);stroke-width:2.5;
stroke-dasharray:5 3}
.taken{fill:none;stroke-width:3.2;opacity:.9}.taken.side-client{stroke:var(--client)}
.taken.side-server{stroke:var(--server)}.taken.side-listener{stroke:var(--listener)}
.taken.future{opacity:.12}.taken.current{stroke-width:5}
.marker circle{stroke:#fff;stroke-width:1.5}.marker text{fill:#fff;font-size:10px;font-weight:700}
.marker.side-client circle{fill:var(--client)}.marker.side-server circle{fill:var(--server)}
.marker.side-listener circle{fill:var(--listener)}.marker.expected circle{fill:#fff;
stroke:var(--bad);stroke-width:2;stroke-dasharray:3 2}.marker.expected text{fill:var(--bad)}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;list-style:none;padding:0;font-size:12px;
margin:4px 0}.legend .key{display:inline-block;width:18px;height:10px;margin-right:5px;
border-radius:2px;vertical-align:middle}.key.side-client{background:var(--client)}
.key.side-server{background:var(--server)}.key.side-listener{background:var(--listener)}
.key.seen{background:var(--seen);border:1.5px solid #1d2430}.key.disagree{border:2px dashed
var(--bad)}.offtable{font-size:12px;margin:2px 0;padding-left:18px}
.step{border:1px solid var(--line);border-left:5px solid #3aa757;border-radius:4px;
padding:4px 10px 8px;margin:8px 0;cursor:pointer}.step.disagree{border-left-color:var(--bad)}
.step.current{background:#fffbe6;box-shadow:0 0 0 2px #f0c000}.step.future{opacity:.55}
.step h3 .num{color:var(--muted)}.step .args{color:var(--muted);font-weight:400}
.badge{font-size:11px;padding:1px 6px;border-radius:3px;margin-left:4px}.badge.agree{
background:#e3f4e8;color:#17692f}.badge.disagree{background:#fde5e8;color:var(--bad)}
.sides{border-collapse:collapse;font-size:12.5px;margin:4px 0;width:100%}
.sides th,.sides td{text-align:left;padding:2px 8px 2px 0;vertical-align:top;
border-bottom:1px solid #eef0f3}.sides thead th{color:var(--muted);font-weight:500}
.sides tr.bad .kstate{color:var(--bad);font-weight:700}.sides tr.ok .kstate{color:#17692f}
.where{font-size:11.5px;color:var(--muted)}.differ{color:var(--bad);font-size:11px}
ul.facts{margin:4px 0;padding-left:18px;font-size:12.5px}.facts .hold{color:#8a5a00}
.facts .mismatch{color:var(--bad);font-weight:600}.facts .tr{color:#6b2d8f}
.seg-ref{font-size:11px;background:#f1f3f6;padding:0 3px;margin-right:2px}
.why p{margin:4px 0}.why{max-width:60em}
.checks ul{margin:2px 0;font-size:12px}.checks .bad{color:var(--bad)}
footer{color:var(--muted);font-size:11px;padding:10px 14px}
@media (max-width:1100px){.cols{grid-template-columns:1fr}.figures{position:static;
max-height:none}}
@media print{@page{size:A4;margin:12mm}body{font-size:10.5pt}#stepper{display:none}
.cols{display:block}.figures{position:static;max-height:none;overflow:visible}
.future,.step.future,.taken.future{opacity:1!important}.here,.here.current{display:none}
.span.current{fill:transparent}.step.current{background:none;box-shadow:none}
.step{break-inside:avoid;cursor:auto}svg{break-inside:avoid;max-height:250mm;width:auto}
#diagram{break-before:page}#steps{break-before:page}h2,h3{break-after:avoid}}
"""

JS = """
(function(){
var d=document,cur=0,follow=true;
function count(){return d.querySelectorAll('article.step').length;}
function show(k,scroll){var n=count(),lab=d.getElementById('cursor-label');
if(!n){lab.textContent='';return;}cur=Math.max(1,Math.min(n,k));d.body.dataset.cursor=cur;
var all=d.querySelectorAll('#report [data-step]');
for(var i=0;i<all.length;i++){var s=+all[i].getAttribute('data-step');
all[i].classList.toggle('future',s>cur);all[i].classList.toggle('current',s===cur);}
var t=d.getElementById('steps');
var of=t&&t.dataset.total==='0'?'':'/'+((t&&t.dataset.total)||n);
lab.textContent=lab.getAttribute('data-word')+' '+cur+of;
if(scroll){var a=d.getElementById('step-'+cur);if(a&&a.scrollIntoView){
a.scrollIntoView({block:'nearest'});}}}
function go(what){var n=count();follow=false;
if(what==='first')show(1,true);else if(what==='prev')show(cur-1,true);
else if(what==='next')show(cur+1,true);else if(what==='last'){follow=true;show(n,true);}}
d.getElementById('stepper').addEventListener('click',function(ev){
var b=ev.target.closest('button[data-go]');if(b)go(b.getAttribute('data-go'));});
d.addEventListener('keydown',function(ev){if(ev.altKey||ev.ctrlKey||ev.metaKey)return;
var m={ArrowLeft:'prev',ArrowRight:'next',Home:'first',End:'last'}[ev.key];
if(m){ev.preventDefault();go(m);}});
d.getElementById('report').addEventListener('click',function(ev){
var t=ev.target.closest('article.step,g.seg,g.band-g');
if(t){follow=false;show(+t.getAttribute('data-step'),false);}});
var h=/^#step-(\\d+)$/.exec(location.hash);show(h?+h[1]:1,false);
if(d.body.dataset.live&&window.EventSource){
var es=new EventSource('events'),btn=d.getElementById('run-next'),
st=d.getElementById('live-status');
es.addEventListener('page',function(ev){d.getElementById('report').innerHTML=ev.data;
show(follow?count():cur,false);});
es.addEventListener('wait',function(ev){btn.hidden=false;btn.disabled=false;
btn.querySelector('span').textContent=ev.data;});
es.addEventListener('end',function(){es.close();btn.hidden=true;
st.textContent=st.getAttribute('data-ended');d.body.dataset.ended='1';});
btn.addEventListener('click',function(){btn.disabled=true;
fetch('next',{method:'POST'}).catch(function(){btn.disabled=false;});});
var pp=d.getElementById('play'),pc=d.getElementById('play-controls'),
pl=d.getElementById('play-log');
if(pp){
var say=function(text,bad){var li=d.createElement('li');li.textContent=text;
if(bad)li.className='error';pl.insertBefore(li,pl.firstChild);
while(pl.children.length>30)pl.removeChild(pl.lastChild);};
var all=function(){return pc.querySelectorAll('button[data-cmd]');};
pc.addEventListener('click',function(ev){var b=ev.target.closest('button[data-cmd]');
if(!b||b.disabled)return;var line=b.getAttribute('data-cmd');
if(b.hasAttribute('data-text')){var f=d.getElementById('text-'+b.getAttribute('data-end'));
line+=' '+(f?f.value:'');}
var bs=all();for(var i=0;i<bs.length;i++)bs[i].disabled=true;d.body.dataset.busy='1';
fetch('command',{method:'POST',headers:{'Content-Type':'text/plain;charset=utf-8'},
body:line}).then(function(r){if(!r.ok)r.text().then(function(t){say(t.trim(),true);});})
.catch(function(e){say(String(e),true);});});
es.addEventListener('panel',function(ev){var keep={},ins=pc.querySelectorAll('input');
for(var i=0;i<ins.length;i++)keep[ins[i].id]=ins[i].value;pc.innerHTML=ev.data;
ins=pc.querySelectorAll('input');for(i=0;i<ins.length;i++){
if(ins[i].id in keep)ins[i].value=keep[ins[i].id];}delete d.body.dataset.busy;
pp.dataset.version=ev.lastEventId||'';});
es.addEventListener('say',function(ev){say(ev.data,false);});
es.addEventListener('end',function(){var bs=pp.querySelectorAll('button,input');
for(var i=0;i<bs.length;i++)bs[i].disabled=true;var a=d.getElementById('download');
if(a)a.hidden=true;});}}
})();
"""
