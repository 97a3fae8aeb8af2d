"""Human output: a header, one small table per step, a verdict. Fits 80 columns.

rich respects NO_COLOR and writes plain text when stdout is not a terminal.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from handshake_lab.i18n.labels import label
from handshake_lab.i18n.lang import in_lang
from handshake_lab.record.events import Event, LabResult, LabStarted, SideObservation, StepReport
from handshake_lab.record.run import RunRecord
from handshake_lab.render.kernel_text import filler
from handshake_lab.render.ladder import ladder_lines

WIDTH = 80
ORPHAN_STATES = frozenset({"TIME_WAIT"})
"""States in which no process owns the socket (psutil reports pid None): shown as such."""


def make_console(stderr: bool = False) -> Console:
    """A console at most 80 columns wide (narrower if the terminal is)."""
    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if console.width > WIDTH or not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, soft_wrap=False, width=WIDTH)
    return console


def format_timer(timer: dict[str, object] | None) -> str | None:
    if not timer:
        return None
    remaining = timer.get("remaining")
    if isinstance(remaining, int | float):
        return f"{timer.get('name')} {remaining:.1f}s"
    return str(timer.get("name"))


def reflow(text: str) -> list[str]:
    """Paragraphs of ``text`` with line breaks inside a paragraph removed.

    Lab files wrap their explanations at any column; the terminal decides where lines end.
    Lines starting with "-" or a digit and "." stay separate (lists).
    """
    paragraphs: list[str] = []
    for block in text.strip().split("\n\n"):
        lines: list[str] = []
        for raw in block.splitlines():
            line = raw.strip()
            if not line:
                continue
            is_item = line.startswith(("- ", "* ")) or (line[:1].isdigit() and ". " in line[:4])
            if lines and not is_item:
                joiner = "" if _is_cjk(lines[-1][-1:]) and _is_cjk(line[:1]) else " "
                lines[-1] = lines[-1] + joiner + line
            else:
                lines.append(line)
        paragraphs.extend(lines)
    return paragraphs


def _is_cjk(char: str) -> bool:
    return bool(char) and ord(char) >= 0x2E80


def _arg(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TableRenderer:
    def __init__(self, console: Console, lang: str) -> None:
        self.console = console
        self.lang = lang
        self.fill = filler({}, lang)

    def _l(self, key: str) -> str:
        return label(key, self.lang)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LabStarted):
            self._header(event)
        elif isinstance(event, StepReport):
            self._step(event)
        else:
            self._result(event)

    def _header(self, ev: LabStarted) -> None:
        c = self.console
        self.fill = filler(ev.kernel, self.lang)
        title = self.fill(in_lang(ev.title, self.lang))
        c.print(Text(f"{self._l('lab')}: {ev.name} - {title}", style="bold"))
        ports = ", ".join(f"{slot}={port}" for slot, port in ev.ports.items())
        c.print(
            f"{self._l('loop')} {escape(ev.versions.get('loop', ev.loop))} | "
            f"{self._l('topology')} {ev.topology} {ev.host} | {self._l('ports')} {ports}"
        )
        c.print(
            f"{self._l('observers')} {', '.join(ev.observers)} | kernel "
            f"{escape(ev.versions.get('kernel', '?'))}"
        )
        for note in ev.notes:
            c.print(Text(f"note: {note}", style="yellow"))
        if ev.evidence:
            c.print(
                f"packets: {ev.evidence.get('capture')} | transitions: {ev.evidence.get('trace')}"
            )
        if ev.intro:
            for paragraph in reflow(self.fill(in_lang(ev.intro, self.lang))):
                c.print()
                c.print(Text(paragraph))

    def _step(self, ev: StepReport) -> None:
        c = self.console
        c.print()
        head = Text(f"{self._l('step')} {ev.index}/{ev.total_steps}  ", style="bold")
        head.append(f"{ev.actor}: {ev.action}", style="bold")
        args = " ".join(f"{k}={_arg(v)}" for k, v in ev.args.items())
        if args:
            head.append(f"  {args}")
        c.print(head)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, show_edge=False)
        table.add_column(self._l("side"), no_wrap=True, max_width=16)
        table.add_column(self._l("expected"), no_wrap=True)
        table.add_column(self._l("kernel"), no_wrap=True)
        table.add_column(self._l("detail"), overflow="fold", max_width=38)
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
            c.print(Padding(Text(line), (0, 0, 0, 2), expand=False))
        if ev.data is not None:
            c.print(
                Padding(
                    Text(f"{self._l('received')}: {ev.data!r}", style="cyan"),
                    (0, 0, 0, 2),
                    expand=False,
                )
            )
        if ev.facts:
            facts = ", ".join(f"{k}={v}" for k, v in ev.facts.items())
            c.print(Padding(Text(f"{self._l('facts')}: {facts}"), (0, 0, 0, 2), expand=False))
        for hold_id, hold in ev.holds.items():
            released = "" if hold.get("active") else ", released"
            line = (
                f"hold {hold_id} ({hold.get('kind')} at {hold.get('at')}{released}): "
                f"nft counter {hold.get('dropped')} dropped"
            )
            c.print(Padding(Text(line, style="yellow"), (0, 0, 0, 2), expand=False))
        for seg in ev.segments:
            line = f"{seg['t_ms']:>9.3f} ms  {seg['from']} > {seg['to']}  {seg['label']}"
            if seg.get("dropped"):
                line += f"  {self._l('dropped_by')} {seg.get('hold')}"
            c.print(Padding(Text(line, style="blue"), (0, 0, 0, 2), expand=False))
        for tr in ev.transitions:
            why = str(tr.get("cause") or "")
            why = self._l(why) if why == "application call" else why  # a key; flags stay
            cause = f" ({self._l('after')} {why})" if why else ""
            if tr.get("source") == "table":
                cause = f" ({self._l('seen_in_table')})"
            elif tr.get("traced"):
                cause += f" [{self._l('traced_as')} -> {tr['traced']}]"
            line = f"{tr['t_ms']:>9.3f} ms  {tr['side']}: {tr['old']} -> {tr['new']}{cause}"
            c.print(Padding(Text(line, style="magenta"), (0, 0, 0, 2), expand=False))
        for qa in ev.quiz:
            if qa["correct"] is None:
                mark, style = "[--]", "dim"
            else:
                mark, style = ("[ok]", "green") if qa["correct"] else ("[xx]", "bold red")
            line = f"{mark} quiz {qa['key']}: you said {qa['answer']}, kernel said {qa['truth']}"
            c.print(Padding(Text(line, style=style), (0, 0, 0, 2), expand=False))
        if ev.agrees:
            c.print(
                Padding(
                    Text(f"[ok] {self._l('agrees')}", style="green"), (0, 0, 0, 2), expand=False
                )
            )
        else:
            c.print(
                Padding(
                    Text(f"[!!] {self._l('disagrees')}", style="bold red"),
                    (0, 0, 0, 2),
                    expand=False,
                )
            )
        for problem in ev.mismatches:
            c.print(Padding(Text(f"- {problem}", style="bold red"), (0, 0, 0, 4), expand=False))
        for i, paragraph in enumerate(reflow(self.fill(in_lang(ev.explanation, self.lang)))):
            prefix = f"{self._l('why')}: " if i == 0 else ""
            c.print(Padding(Text(prefix + paragraph), (0, 0, 0, 2), expand=False))

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
        if obs.local:
            arrow = f"{obs.local} > {obs.remote}" if obs.remote else f"{obs.local} *"
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
            for line in ladder_lines(conv, width=WIDTH):
                self.console.print(Text(line), no_wrap=True, overflow="ignore")

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
            c.print(Text(f"quiz: {q['correct']}/{q['asked']} predictions right ({q['score']}%)"))
        for check in ev.checks:
            mark = "[ok]" if check["ok"] else "[!!]"
            style = "green" if check["ok"] else "bold red"
            c.print(Text(f"{mark} wire: {check['name']}: {check['detail']}", style=style))
        if ev.passed:
            c.print(Text(f"{self._l('passed')} ({ev.agreed}/{ev.steps})", style="bold green"))
        else:
            bad = ", ".join(ev.disagreed_steps)
            c.print(Text(f"{self._l('failed')}: {bad} ({ev.agreed}/{ev.steps})", style="bold red"))
