"""``sweep``'s outputs, drawn from the sweep points (``record.sweep``) and nothing else: the
terminal table, CSV, JSON, and one self-contained HTML page with the plots of time in each
state against the RTT added (inline SVG, no script, no network)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from rich.cells import cell_len

from handshake_lab.i18n.netem import netem_label
from handshake_lab.record.sweep import Span, SweepPoint
from handshake_lab.render.text import wrap

CSV_FIELDS = (
    "delay_ms",
    "loss_pct",
    "passed",
    "side",
    "state",
    "entered_ms",
    "left_ms",
    "duration_ms",
    "answer_ms",
    "next",
    "cause",
    "srtt_ms",
    "rttvar_ms",
    "rto_ms",
)
"""The CSV columns: one row per run and state stay (the kernel's figures of that side)."""

JSON_FORMAT = "hslab-sweep/1"


def _n(value: float | None) -> str:
    """A time in ms: to the tenth of a ms, or to the microsecond below 10 ms."""
    if value is None:
        return ""
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _l(text: str, width: int) -> str:
    """Left-aligned in ``width`` terminal columns (a Chinese character takes two)."""
    return text + " " * max(0, width - cell_len(text))


def _r(text: str, width: int) -> str:
    return " " * max(0, width - cell_len(text)) + text


def _g(value: float) -> str:
    return f"{value:g}"


def _words(lang: str) -> Callable[[str], str]:
    def word(key: str) -> str:
        return netem_label(key, lang)

    return word


def _verdict(point: SweepPoint, lang: str) -> str:
    key = {True: "verdict_pass", False: "verdict_fail", None: "verdict_none"}[point.passed]
    return netem_label(key, lang)


def _series(points: Sequence[SweepPoint]) -> list[tuple[str, str]]:
    """Every (side, state) any run stayed in, in order of first entry, LISTEN and ends aside."""
    seen: dict[tuple[str, str], None] = {}
    for point in points:
        for span in point.spans:
            if span.left_ms is not None:
                seen.setdefault((span.side, span.state), None)
    return list(seen)


def _cell(span: Span | None) -> str:
    """``duration (answer after)`` of one stay; ``-`` where the run had none."""
    if span is None:
        return "-"
    cell = _n(span.duration_ms)
    return cell + (f" ({_n(span.answer_ms)})" if span.answer_ms is not None else "")


def sweep_table(points: Sequence[SweepPoint], lang: str, width: int = 100) -> str:
    """Per run: each state stay (entered, left, duration, answer after); then the summary."""
    w = _words(lang)
    out: list[str] = []
    for point in points:
        out.append(
            w("heading").format(
                lab=point.lab,
                topology=point.topology,
                delay=_g(point.rtt_ms),
                loss=_g(point.loss_pct),
            )
            + f" - {_verdict(point, lang)}"
        )
        if not point.traced:
            out.extend("  " + line for line in wrap(w("untraced"), width - 2))
        # 80 columns with the longest state in the last one (ESTABLISHED).
        out.append(
            f"  {_l(w('side'), 13)} {_l(w('state'), 12)} {_r(w('entered'), 8)} "
            f"{_r(w('left'), 8)} {_r(w('duration'), 8)} {_r(w('answer'), 12)} {w('next')}"
        )
        for span in point.spans:
            left = _n(span.left_ms) if span.left_ms is not None else w("still")
            out.append(
                f"  {_l(span.side, 13)} {_l(span.state, 12)} {_r(_n(span.entered_ms), 8)} "
                f"{_r(left, 8)} {_r(_n(span.duration_ms), 8)} {_r(_n(span.answer_ms), 12)} "
                f"{span.next_state or ''}".rstrip()
            )
        if point.measured:
            out.append(f"  {w('measured')}:")
            for side, info in point.measured.items():
                out.append(
                    f"    {side:<14} srtt {_n(info.get('rtt_ms'))} ms, "
                    f"rttvar {_n(info.get('rttvar_ms'))} ms, rto {_n(info.get('rto_ms'))} ms"
                )
        out.append("")
    if len(points) > 1:
        out.append(w("summary"))
        out.extend(_summary(points, width))
        out.append("")
    out.extend(wrap(w("legend"), width))
    return "\n".join(out) + "\n"


def _summary(points: Sequence[SweepPoint], width: int) -> list[str]:
    """Each state's duration (answer after) per delay: as many delays side by side as fit in
    ``width`` columns, the rest in further blocks below, each with the states' names."""
    series = _series(points)
    labels = [f"{side} {state}" for side, state in series]
    heads = [f"{_g(p.rtt_ms)} ms" for p in points]
    cells = [[_cell(p.span(side, state)) for p in points] for side, state in series]
    label_w = max((cell_len(x) for x in labels), default=0) + 1
    col_w = max(cell_len(x) for x in [*heads, *(c for row in cells for c in row)]) + 2
    per_block = max(1, (width - 2 - label_w) // col_w)
    out: list[str] = []
    for start in range(0, len(points), per_block):
        block = range(start, min(start + per_block, len(points)))
        if start:
            out.append("")
        out.append("  " + _l("", label_w) + "".join(_r(heads[i], col_w) for i in block))
        for label, row in zip(labels, cells, strict=True):
            out.append("  " + _l(label, label_w) + "".join(_r(row[i], col_w) for i in block))
    return out


def sweep_rows(points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for point in points:
        for span in point.spans:
            info = point.measured.get(span.side, {})
            rows.append(
                {
                    "delay_ms": point.rtt_ms,
                    "loss_pct": point.loss_pct,
                    "passed": point.passed,
                    "side": span.side,
                    "state": span.state,
                    "entered_ms": span.entered_ms,
                    "left_ms": span.left_ms,
                    "duration_ms": span.duration_ms,
                    "answer_ms": span.answer_ms,
                    "next": span.next_state,
                    "cause": span.cause,
                    "srtt_ms": info.get("rtt_ms"),
                    "rttvar_ms": info.get("rttvar_ms"),
                    "rto_ms": info.get("rto_ms"),
                }
            )
    return rows


def sweep_csv(points: Sequence[SweepPoint]) -> str:
    """One row per run and state stay; empty cells where a figure does not exist."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sweep_rows(points):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def sweep_json(points: Sequence[SweepPoint]) -> dict[str, Any]:
    """The sweep as one JSON document (docs/json.md, "sweep")."""
    first = points[0] if points else None
    return {
        "format": JSON_FORMAT,
        "lab": first.lab if first else None,
        "topology": first.topology if first else None,
        "runs": [p.as_dict() for p in points],
    }


# -- HTML -------------------------------------------------------------------------------------

PLOT_W, PLOT_H = 720, 330
LEFT, RIGHT, TOP, BOTTOM = 64, 200, 18, 46
COLOURS = (
    "#1f6fd1",
    "#d9730d",
    "#2e8b57",
    "#8e44ad",
    "#c8102e",
    "#5b6575",
    "#b8860b",
    "#0f8b8d",
    "#e75480",
    "#6b4226",
)


def _ticks(top: float) -> list[float]:
    """About five round ticks from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(top / step) + 1)]


def _plot(
    points: Sequence[SweepPoint],
    series: list[tuple[str, str]],
    value: str,
    title: str,
    lang: str,
    srtt: bool,
) -> str:
    w = _words(lang)
    xs = [p.rtt_ms for p in points]

    def figure(span: Span | None) -> float | None:
        if span is None:
            return None
        return span.answer_ms if value == "answer" else span.duration_ms

    # The scale is the plotted figures'; a srtt far above them (a socket whose first sample
    # timed a held segment) is drawn at the top edge with its value, not allowed to flatten all.
    ys = [figure(p.span(*key)) for key in series for p in points]
    y_ticks = _ticks(max([y for y in ys if y is not None] or [1.0]))
    x_ticks = _ticks(max(xs or [1.0]))
    inner_w, inner_h = PLOT_W - LEFT - RIGHT, PLOT_H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + inner_w * x / x_ticks[-1]

    def py(y: float) -> float:
        return TOP + inner_h * (1 - y / y_ticks[-1])

    parts = [
        f'<svg class="plot" viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" class="frame"/>',
    ]
    for t in y_ticks:
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + inner_w}" y1="{py(t):.1f}" '
            f'y2="{py(t):.1f}"/><text class="tick" x="{LEFT - 6}" y="{py(t) + 4:.1f}" '
            f'text-anchor="end">{t:g}</text>'
        )
    for t in x_ticks:
        parts.append(
            f'<text class="tick" x="{px(t):.1f}" y="{TOP + inner_h + 16}" '
            f'text-anchor="middle">{t:g}</text>'
        )
    parts.append(
        f'<text class="axis" x="{LEFT + inner_w / 2}" y="{PLOT_H - 8}" '
        f'text-anchor="middle">{escape(w("plot_x"))}</text>'
        f'<text class="axis" transform="translate(14 {TOP + inner_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(w("plot_y"))}</text>'
    )
    for i, key in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = [(px(p.rtt_ms), py(y)) for p in points if (y := figure(p.span(*key))) is not None]
        dash = "" if value == "answer" else ' stroke-dasharray="6 4"'
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline class="series" points="{path}" stroke="{colour}"{dash}/>')
        for x, y in coords:
            parts.append(
                f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{colour}"/>'
            )
        if srtt:
            for p in points:
                rtt = p.measured.get(key[0], {}).get("rtt_ms")
                if rtt is None:
                    continue
                tip = f"<title>{escape(key[0])} {escape(w('srtt'))} {rtt:g} ms</title>"
                if rtt <= y_ticks[-1]:
                    parts.append(
                        f'<circle cx="{px(p.rtt_ms):.1f}" cy="{py(rtt):.1f}" r="4" '
                        f'fill="none" stroke="{colour}">{tip}</circle>'
                    )
                else:
                    x = px(p.rtt_ms)
                    parts.append(
                        f'<path class="off" d="M{x - 4:.1f},{TOP + 7} L{x:.1f},{TOP} '
                        f'L{x + 4:.1f},{TOP + 7} Z" fill="{colour}">{tip}</path>'
                        f'<text class="offval" x="{x + 6:.1f}" y="{TOP + 9}">{rtt:g}</text>'
                    )
        ly = TOP + 14 + 16 * i
        parts.append(
            f'<line x1="{PLOT_W - RIGHT + 28}" x2="{PLOT_W - RIGHT + 48}" y1="{ly - 4}" '
            f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text class="key" x="{PLOT_W - RIGHT + 52}" y="{ly}">'
            f"{escape(key[0])} {escape(key[1])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body{margin:0;padding:10px 16px;color:#1d2430;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Noto Sans",Arial,"PingFang SC","Noto Sans CJK SC",sans-serif}
h1{font-size:19px;margin:0 0 6px}h2{font-size:15px;margin:16px 0 4px}
.note{color:#5b6575;font-size:12.5px;max-width:60em}
svg.plot{width:100%;max-width:900px;height:auto;display:block;border:1px solid #e3e7ed;
margin:4px 0}.key{font-size:10.5px}.offval{font-size:9.5px;fill:#5b6575}
svg text{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:11px;
fill:#1d2430}.frame{fill:#fff;stroke:#c9d1dc}.grid{stroke:#eef0f3}.series{fill:none;
stroke-width:2}.tick,.axis{fill:#5b6575}
table{border-collapse:collapse;font-size:12.5px}th,td{text-align:right;padding:2px 10px;
border-bottom:1px solid #eef0f3}th:first-child,td:first-child{text-align:left}
@media print{@page{size:A4;margin:12mm}svg{break-inside:avoid}}
"""


def sweep_html(points: Sequence[SweepPoint], lang: str) -> str:
    """The page: the answer-after plot (with the kernel's srtt), the duration plot, the table."""
    w = _words(lang)
    lab = points[0].lab if points else ""
    series = _series(points)
    answered = [
        k for k in series if any((s := p.span(*k)) and s.answer_ms is not None for p in points)
    ]
    title = w("plot_title").format(lab=lab)
    head = "".join(f"<th>{_g(p.rtt_ms)} ms</th>" for p in points)
    rows = ""
    for side, state in series:
        cells = ""
        for p in points:
            cells += f"<td>{escape(_cell(p.span(side, state)))}</td>"
        rows += f"<tr><td>{escape(side)} {escape(state)}</td>{cells}</tr>"
    html_lang = "zh-Hans" if lang == "zh" else "en"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{html_lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>handshake-lab sweep: {escape(lab)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="note">{escape(w("plot_note"))}</p>'
        + (
            f'<p class="note untraced">{escape(w("untraced"))}</p>'
            if not all(p.traced for p in points)
            else ""
        )
        + f"<h2>{escape(w('answer'))}</h2>"
        + _plot(points, answered, "answer", w("answer"), lang, srtt=True)
        + f"<h2>{escape(w('duration'))}</h2>"
        + _plot(points, series, "duration", w("duration"), lang, srtt=False)
        + f"<h2>{escape(w('summary'))}</h2>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>"
        f'<p class="note">{escape(w("legend"))}</p>'
        "</body></html>\n"
    )


__all__ = ["CSV_FIELDS", "JSON_FORMAT", "sweep_csv", "sweep_html", "sweep_json", "sweep_table"]
