"""Human output: a header, one small table per step, a verdict, the ladders.

The console (``render.text.make_console``) is as wide as the terminal (80 without one); every
text is wrapped by ``render.text.wrap`` to that width by display width, prose (intro,
explanations, notes) at most ``PROSE_MAX`` columns. rich respects NO_COLOR and writes plain
text when stdout is not a terminal.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from handshake_lab.i18n.labels import label
from handshake_lab.i18n.lang import in_lang
from handshake_lab.lab.evidence import TRACE_BLIND_SPOTS
from handshake_lab.record.events import Event, LabResult, LabStarted, SideObservation, StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.render.kernel_text import filler
from handshake_lab.render.ladder import ladder_lines
from handshake_lab.render.text import (
    PAYLOAD_MAX,
    PROSE_MAX,
    abbreviate,
    clip,
    wrap,
    wrap_paragraphs,
)

__all__ = ["LADDER_MAX", "TableRenderer", "format_timer"]

LADDER_MAX = 100
"""The ladder is drawn at the console's width up to this: wider only stretches the arrows."""
DETAIL_MIN = 38
"""The step table's last column (ss / psutil, the 4-tuple) at 80 columns; wider consoles give
it what the other three columns leave."""
ORPHAN_STATES = frozenset({"TIME_WAIT"})
"""States in which no process owns the socket (psutil reports pid None): shown as such."""


def format_timer(timer: dict[str, object] | None) -> str | None:
    if not timer:
        return None
    remaining = timer.get("remaining")
    if isinstance(remaining, int | float):
        return f"{timer.get('name')} {remaining:.1f}s"
    return str(timer.get("name"))


def _arg(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and len(value) > PAYLOAD_MAX:
        return abbreviate(value)
    return str(value)


class TableRenderer:
    def __init__(self, console: Console, lang: str) -> None:
        self.console = console
        self.lang = lang
        self.fill = filler({}, lang)
        self.width = console.width
        self.prose = min(self.width, PROSE_MAX)

    def _l(self, key: str) -> str:
        return label(key, self.lang)

    def _lines(self, lines: list[str], style: str = "") -> None:
        for line in lines:
            self.console.print(Text(line, style=style), no_wrap=True, overflow="ignore")

    def _say(self, text: str, style: str = "", indent: int = 2) -> None:
        """A one-line record (a segment, a transition, a hold...) at ``indent``: wrapped at
        the console's width, its continuation lines two columns further in."""
        first = " " * indent
        self._lines(wrap(text, self.width, first=first, indent=first + "  "), style)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LabStarted):
            self._header(event)
        elif isinstance(event, StepReport):
            self._step(event)
        else:
            self._result(event)

    def _header(self, ev: LabStarted) -> None:
        self.fill = filler(ev.kernel, self.lang)
        title = self.fill(in_lang(ev.title, self.lang))
        self._say(f"{self._l('lab')}: {ev.name} - {title}", "bold", indent=0)
        ports = ", ".join(f"{slot}={port}" for slot, port in ev.ports.items())
        self._say(
            f"{self._l('loop')} {ev.versions.get('loop', ev.loop)} | "
            f"{self._l('topology')} {ev.topology} {ev.host} | {self._l('ports')} {ports}",
            indent=0,
        )
        self._say(
            f"{self._l('observers')} {', '.join(ev.observers)} | {self._l('kernel_version')} "
            f"{ev.versions.get('kernel', '?')}",
            indent=0,
        )
        for note in ev.notes:
            shown = self._l("note_trace_blind") if note == TRACE_BLIND_SPOTS else note
            first = f"{self._l('note')}: "
            self._lines(wrap(shown, self.prose, first=first, indent="  "), "yellow")
        if ev.evidence:
            self._say(
                f"{self._l('packets')}: {ev.evidence.get('capture')} | "
                f"{self._l('trace_stream')}: {ev.evidence.get('trace')}",
                indent=0,
            )
        if ev.intro:
            self.console.print()
            self._lines(wrap_paragraphs(self.fill(in_lang(ev.intro, self.lang)), self.prose))

    def _step(self, ev: StepReport) -> None:
        c = self.console
        c.print()
        bold = f"{self._l('step')} {ev.index}/{ev.total_steps}  {ev.actor}: {ev.action}"
        args = " ".join(f"{k}={_arg(v)}" for k, v in ev.args.items())
        head = wrap(f"{bold}  {args}" if args else bold, self.width, first="", indent="    ")
        for number, line in enumerate(head):
            text = Text(line)
            if number == 0:
                text.stylize("bold", 0, len(bold))
            c.print(text, no_wrap=True, overflow="ignore")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, show_edge=False)
        table.add_column(self._l("side"), no_wrap=True, max_width=16)
        table.add_column(self._l("expected"), no_wrap=True)
        table.add_column(self._l("kernel"), no_wrap=True)
        detail_w = max(DETAIL_MIN, min(self.width, PROSE_MAX) - (80 - DETAIL_MIN))
        table.add_column(self._l("detail"), overflow="fold", max_width=detail_w)
        for side, obs in ev.observed.items():
            expected = ev.expected.get(side, "")
            state = Text(obs.state)
            if expected:
                state.stylize("green" if expected == obs.state and obs.agree else "bold red")
            table.add_row(side, expected or "-", state, self._detail(obs))
        if ev.observed:
            c.print(table)
        if ev.outcome is not None or ev.expected_outcome is not None:
            line = f"{self._l('outcome')}: {ev.outcome}"
            if ev.expected_outcome is not None and ev.expected_outcome != ev.outcome:
                line += f" ({self._l('expected')} {ev.expected_outcome})"
            self._say(line)
        if ev.data is not None:
            self._say(f"{self._l('received')}: {abbreviate(ev.data)}", "cyan")
        if ev.facts:
            facts = ", ".join(f"{k}={clip(str(v))}" for k, v in ev.facts.items())
            self._say(f"{self._l('facts')}: {facts}")
        for hold_id, hold in ev.holds.items():
            released = "" if hold.get("active") else ", released"
            line = (
                f"hold {hold_id} ({hold.get('kind')} at {hold.get('at')}{released}): "
                f"nft counter {hold.get('dropped')} dropped"
            )
            self._say(line, "yellow")
        for seg in ev.segments:
            line = f"{seg['t_ms']:>9.3f} ms  {seg['from']} > {seg['to']}  {seg['label']}"
            if "SYN" in str(seg["flags"]).split(",") and seg.get("options"):
                line += f"  [{seg['options']}]"  # what the handshake negotiates
            if seg.get("dropped"):
                line += f"  {self._l('dropped_by')} {seg.get('hold')}"
            self._say(line, "blue")
        for tr in ev.transitions:
            why = str(tr.get("cause") or "")
            why = self._l(why) if why == "application call" else why  # a key; flags stay
            cause = f" ({self._l('after')} {why})" if why else ""
            if tr.get("source") == "table":
                cause = f" ({self._l('seen_in_table')})"
            elif tr.get("traced"):
                cause += f" [{self._l('traced_as')} -> {tr['traced']}]"
            line = f"{tr['t_ms']:>9.3f} ms  {tr['side']}: {tr['old']} -> {tr['new']}{cause}"
            self._say(line, "magenta")
        for qa in ev.quiz:
            if qa["correct"] is None:
                mark, style = "[--]", "dim"
            else:
                mark, style = ("[ok]", "green") if qa["correct"] else ("[xx]", "bold red")
            line = f"{mark} {self._l('q_graded').format(**qa)}"
            self._say(line, style)
        if ev.agrees:
            self._say(f"[ok] {self._l('agrees')}", "green")
        else:
            self._say(f"[!!] {self._l('disagrees')}", "bold red")
        for problem in ev.mismatches:
            self._lines(
                wrap(clip(problem), self.width, first="    - ", indent="      "), "bold red"
            )
        explanation = self.fill(in_lang(ev.explanation, self.lang))
        self._lines(
            wrap_paragraphs(explanation, self.prose, indent="  ", first=f"  {self._l('why')}: ")
        )

    def _detail(self, obs: SideObservation) -> Text:
        if not obs.sources:
            return Text(label("no_socket", self.lang), style="dim")
        if obs.state == "ABSENT" and obs.agree:
            names = ", ".join(obs.sources)
            return Text(f"{label('absent', self.lang)} ({names})", style="dim")
        raw = " / ".join(v if v is not None else "-" for v in obs.sources.values())
        out = Text(raw)
        timer = format_timer(obs.timer)
        if timer:
            out.append(f"  {timer}", style="yellow")
        arrow = obs.tuple_text()
        if arrow:
            out.append("\n" + arrow, style="dim")
        if obs.state in ORPHAN_STATES and obs.pid is None and "psutil" in obs.sources:
            # Say it rather than leave a blank: no process owns it any more, the kernel does.
            out.append("\n" + label("no_pid", self.lang), style="dim")
        if obs.note:
            out.append("\n" + obs.note, style="magenta")
        return out

    def ladders(self, record: RunRecord) -> None:
        """A ladder diagram per captured conversation, after the run, with each end's state
        changes beside the arrows: both from the run record, as the step tables showed them."""
        for conv in record.conversations():
            self.console.print()
            self._lines(ladder_lines(conv, width=min(self.width, LADDER_MAX)))

    def render(self, record: RunRecord) -> None:
        """A whole run (e.g. one read back from ``--json``): every event, then the ladders."""
        for event in record.events():
            self(event)
        self.ladders(record)

    def _result(self, ev: LabResult) -> None:
        c = self.console
        c.print()
        if ev.quiz is not None:
            q = ev.quiz
            self._say(self._l("q_total").format(**q), indent=0)
        for check in ev.checks:
            mark = "[ok]" if check["ok"] else "[!!]"
            style = "green" if check["ok"] else "bold red"
            self._say(f"{mark} wire: {check['name']}: {check['detail']}", style, indent=0)
        if ev.passed:
            self._say(f"{self._l('passed')} ({ev.agreed}/{ev.steps})", "bold green", indent=0)
        else:
            bad = ", ".join(ev.disagreed_steps)
            self._say(f"{self._l('failed')}: {bad} ({ev.agreed}/{ev.steps})", "bold red", indent=0)
