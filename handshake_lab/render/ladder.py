"""A ladder (sequence) diagram of one TCP conversation, as plain text of a given width.

    client 127.0.0.1:40000 <-> server 127.0.0.1:8080
      t (ms) client       |                                          | server
       0.000 SYN_SENT     |--SYN seq=0------------------------------>|
       0.041              |<--SYN,ACK seq=0 ack=1--------------------| SYN_RECV
       0.060 ESTABLISHED  |--ACK seq=1 ack=1------------------------>| ESTABLISHED

Columns: time in milliseconds since the conversation's first packet, the client's state
annotation, the arrow between the two ends' bars, the server's state annotation. An arrow's
label is the conversation's relative ``label`` (flags, seq, ack, len); a label too long for
the arrow (10-digit numbers, big lengths) is wrapped onto lines above a bare arrow, so nothing
is cut and no line is wider than ``width`` (``render.text.wrap``, the one wrapping rule).

The conversation is the run record's view (``record.run.ConversationView``): its rows are the
segments the step tables list, its state annotations the transitions the record holds, both
timed in milliseconds since the run began. Each annotation is printed on the row of the
segment nearest in time: the state that held after that segment. A second annotation for the
same side and row, or one far from every segment, gets a row of its own with no arrow.

Pure text, no rich: the lines are plain strings any renderer (or a test) can use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from handshake_lab.record.run import ConversationView, End, LadderRow
from handshake_lab.render.text import wrap

__all__ = ["Annotation", "ladder_lines", "render_ladder"]

Annotation = tuple[float, End, str]
"""(milliseconds since the run began, "client" or "server", state text)."""

_TIME_W = 9
_STATE_W = 12
_MIN_ARROW = 20
# time + " " + client + " " + "|" + arrow + "|" + " " + server
_FIXED = _TIME_W + 1 + _STATE_W + 1 + 1 + 1 + 1 + _STATE_W


@dataclass(slots=True)
class _Row:
    time: float
    entry: LadderRow | None
    states: dict[End, str] = field(default_factory=dict)


def _fmt_ms(ms: float) -> str:
    for spec in ("{:.3f}", "{:.1f}", "{:.0f}", "{:.2e}"):
        text = spec.format(ms)
        if len(text) <= _TIME_W:
            return text.rjust(_TIME_W)
    return "?".rjust(_TIME_W)  # pragma: no cover - "{:.2e}" always fits


DROP_MARK = "x"


def _arrow(label: str, to_server: bool, width: int, dropped: bool = False) -> str:
    """An arrow across ``width`` columns; a dropped segment's arrow stops short of the
    receiver's bar with an ``x`` (it never arrived)."""
    if dropped:
        if to_server:
            body = "--" + label
            return body + "-" * (width - len(body) - 4) + DROP_MARK + "   "
        body = "   " + DROP_MARK + "--" + label
        return body + "-" * (width - len(body))
    if to_server:
        body = "--" + label
        return body + "-" * (width - len(body) - 1) + ">"
    body = "<--" + label
    return body + "-" * (width - len(body))


NEAREST_ROW_MS = 5.0
"""An annotation further than this from every segment gets a row of its own."""


def _rows(conv: ConversationView, annotations: Iterable[Annotation]) -> list[_Row]:
    rows = [_Row(e.t_ms, e) for e in conv.rows]
    extra: list[_Row] = []
    for when, side, state in sorted(annotations, key=lambda a: a[0]):
        # The packet row nearest in time. Not "the last one before": a change the application
        # causes (close() -> FIN_WAIT1) is traced a few microseconds BEFORE the segment it
        # sends is captured, while a change a segment causes is traced just after it.
        target: _Row | None = None
        if rows:
            nearest = min(rows, key=lambda row: (abs(row.time - when), row.time))
            if abs(nearest.time - when) <= NEAREST_ROW_MS:
                target = nearest
        if target is not None and side not in target.states:
            target.states[side] = state
        else:
            extra.append(_Row(when, None, {side: state}))
    # Stable merge: a bare row sorts after the packet rows at the same time.
    merged = [(r.time, 0, i, r) for i, r in enumerate(rows)]
    merged += [(r.time, 1, i, r) for i, r in enumerate(extra)]
    merged.sort(key=lambda t: (t[0], t[1], t[2]))
    return [r for *_, r in merged]


def ladder_lines(
    conv: ConversationView,
    annotations: Iterable[Annotation] | None = None,
    *,
    width: int = 80,
    client_label: str = "client",
    server_label: str = "server",
) -> list[str]:
    """The diagram as lines, none longer than ``width`` (at least 58). The annotations are
    the conversation's own states unless given."""
    annotations = conv.states if annotations is None else annotations
    arrow_w = max(width - _FIXED, _MIN_ARROW)
    width = _FIXED + arrow_w
    inner = arrow_w - 4  # room for a label between "<--" / "--" and the arrow head
    if conv.self_connected:
        server_label = "(itself)"
    lines: list[str] = []

    c_ep = f"{client_label} {conv.client}"
    s_ep = "itself" if conv.self_connected else f"{server_label} {conv.server}"
    title = f"{c_ep} <-> {s_ep}"
    if len(title) <= width:
        lines.append(title)
    else:
        lines += [c_ep[:width], s_ep[:width]]
    blank_arrow = " " * arrow_w
    lines.append(
        f"{'t (ms)':>{_TIME_W}} {client_label[:_STATE_W]:<{_STATE_W}} |{blank_arrow}| "
        f"{server_label[:_STATE_W]}".rstrip()
    )

    start = conv.start_ms
    blank_time = " " * _TIME_W
    blank_state = " " * _STATE_W
    for row in _rows(conv, annotations):
        t = _fmt_ms(row.time - start)
        left = row.states.get("client", "")[:_STATE_W].ljust(_STATE_W)
        right = row.states.get("server", "")[:_STATE_W]
        if row.entry is None:
            lines.append(f"{t} {left} |{blank_arrow}| {right}".rstrip())
            continue
        to_server = row.entry.sender == "client"
        label = ("forged " if row.entry.forged else "") + row.entry.label
        dropped = row.entry.dropped
        if len(label) <= inner - (3 if dropped else 0):
            arrow = _arrow(label, to_server, arrow_w, dropped)
            lines.append(f"{t} {left} |{arrow}| {right}".rstrip())
            continue
        # Too long for the arrow: the label's words on lines above, then a bare arrow.
        for i, chunk in enumerate(wrap(label, inner)):
            head = f"{t} {left}" if i == 0 else f"{blank_time} {blank_state}"
            tail = f" {right}" if i == 0 else ""
            lines.append(f"{head} |  {chunk:<{arrow_w - 2}}|{tail}".rstrip())
        lines.append(f"{blank_time} {blank_state} |{_arrow('', to_server, arrow_w, dropped)}|")
    return lines


def render_ladder(
    conv: ConversationView,
    annotations: Iterable[Annotation] | None = None,
    *,
    width: int = 80,
    client_label: str = "client",
    server_label: str = "server",
) -> str:
    """:func:`ladder_lines` joined with newlines (no trailing newline)."""
    return "\n".join(
        ladder_lines(
            conv,
            annotations,
            width=width,
            client_label=client_label,
            server_label=server_label,
        )
    )
