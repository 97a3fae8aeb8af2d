"""The class summary of ``grade``: a CSV, a one-file HTML page, JSON, and terminal lines.

All four are drawn from the same ``Graded`` list (``lab.grading``), in the same order
(students by name) and with the same columns, so a spreadsheet, the page and an LMS import
cannot tell different stories. The CSV's columns are stable: the fixed ones (``COLUMNS``),
then one per step, labs by name and each lab's steps in its file's order.

The page is self-contained (inline CSS, no script, no font, no image, a Content-Security-
Policy that forbids every fetch): it opens from a USB stick, an LMS attachment or a mail.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from typing import Any

from handshake_lab import __version__
from handshake_lab.i18n.grading import grade_label
from handshake_lab.i18n.states import unwrap
from handshake_lab.lab.grading import CLASSES, Graded, WrongPrediction, wrong_predictions
from handshake_lab.spec.loader import builtin_names, find_lab

GRADE_SCHEMA = 1
"""The version of ``grade --json``'s document (docs/grading.md)."""

COLUMNS: tuple[str, ...] = (
    "student",
    "lab",
    "class",
    "reason",
    "topology",
    "kernel",
    "steps_done",
    "steps_total",
    "agreed",
    "asked",
    "correct",
    "score",
    "same_run_as",
)
TRUSTED = frozenset({"ok", "wrong-predictions", "kernel-disagreed", "truncated"})
"""Classes whose steps and answers count in the class's rates (their records hold together)."""
TOP_WRONG = 12


def step_columns(graded: Sequence[Graded]) -> list[tuple[str, str]]:
    """(lab, step id) per step column: labs by name; a built-in lab's steps in its file's
    order (every step set), another lab's in the order its runs reported them."""
    labs = sorted({g.lab for g in graded if g.lab is not None})
    out: list[tuple[str, str]] = []
    for lab in labs:
        order: list[str] = []
        if lab in builtin_names():
            order = [step.id for step in find_lab(lab).steps]
        for g in graded:
            if g.lab == lab:
                order += [s.id for s in g.steps if s.id not in order]
        out += [(lab, step) for step in dict.fromkeys(order)]
    return out


def _step_cell(g: Graded, lab: str, step_id: str) -> str:
    """``1`` passed, ``0`` not, empty where the run has no such step or is not trusted."""
    if g.lab != lab or g.klass not in TRUSTED:
        return ""
    for step in g.steps:
        if step.id == step_id:
            return "1" if step.passed else "0"
    return ""


def row(g: Graded, columns: Sequence[tuple[str, str]]) -> dict[str, str]:
    trusted = g.klass in TRUSTED
    quiz = g.quiz if trusted else None
    fixed = {
        "student": g.name,
        "lab": g.lab or "",
        "class": g.klass,
        "reason": g.reason,
        "topology": g.topology or "",
        "kernel": g.kernel or "",
        "steps_done": str(len(g.steps)) if g.lab else "",
        "steps_total": str(g.total_steps) if g.lab else "",
        "agreed": str(g.agreed) if trusted else "",
        "asked": str(quiz["asked"]) if quiz else "",
        "correct": str(quiz["correct"]) if quiz else "",
        "score": f"{quiz['score']}" if quiz else "",
        "same_run_as": " ".join(g.same_run_as),
    }
    steps = {f"{lab}:{step}": _step_cell(g, lab, step) for lab, step in columns}
    return {**fixed, **steps}


def csv_text(graded: Sequence[Graded]) -> str:
    """One row per student, ``COLUMNS`` then ``LAB:STEP`` per step."""
    columns = step_columns(graded)
    out = io.StringIO()
    writer = csv.DictWriter(
        out,
        fieldnames=[*COLUMNS, *(f"{lab}:{step}" for lab, step in columns)],
        lineterminator="\n",
    )
    writer.writeheader()
    for g in graded:
        writer.writerow(row(g, columns))
    return out.getvalue()


def pass_rates(graded: Sequence[Graded]) -> list[tuple[str, str, int, int]]:
    """(lab, step, passed, runs that reached it) per step column, over trusted runs."""
    out = []
    for lab, step in step_columns(graded):
        cells = [_step_cell(g, lab, step) for g in graded]
        reached = [c for c in cells if c]
        out.append((lab, step, reached.count("1"), len(reached)))
    return out


def class_counts(graded: Sequence[Graded]) -> dict[str, int]:
    return {klass: sum(1 for g in graded if g.klass == klass) for klass in CLASSES}


def json_doc(graded: Sequence[Graded], directory: str) -> dict[str, Any]:
    """``grade --json``: the class as one object for an LMS (docs/grading.md)."""
    columns = step_columns(graded)
    return {
        "schema": GRADE_SCHEMA,
        "event": "grades",
        "directory": directory,
        "handshake_lab": __version__,
        "classes": class_counts(graded),
        "steps": [
            {"lab": lab, "step": step, "passed": passed, "runs": runs}
            for lab, step, passed, runs in pass_rates(graded)
        ],
        "students": [
            {
                "student": g.name,
                "files": [f for f in (g.run_file, g.answers_file) if f],
                "lab": g.lab,
                "class": g.klass,
                "reason": g.reason,
                "problems": list(g.problems),
                "topology": g.topology,
                "kernel": g.kernel,
                "steps_done": len(g.steps),
                "steps_total": g.total_steps,
                "agreed": g.agreed if g.klass in TRUSTED else None,
                "quiz": g.quiz if g.klass in TRUSTED else None,
                "same_run_as": list(g.same_run_as),
                "steps": {
                    f"{lab}:{step}": (None if not cell else cell == "1")
                    for (lab, step) in columns
                    if g.lab == lab
                    for cell in [_step_cell(g, lab, step)]
                },
            }
            for g in graded
        ],
        "wrong_predictions": [
            {
                "lab": w.lab,
                "step": w.step,
                "key": w.key,
                "answer": w.answer,
                "students": list(w.students),
                "truths": list(w.truths),
            }
            for w in wrong_predictions(graded)
        ],
    }


def summary_lines(graded: Sequence[Graded], lang: str) -> list[str]:
    """The terminal's account: one line per student, then the class's counts."""
    width = max((len(g.name) for g in graded), default=7)
    lines = []
    for g in graded:
        score = f"{g.quiz['score']:5.1f}" if g.quiz and g.klass in TRUSTED else "    -"
        lines.append(f"{g.name:<{width}}  {g.klass:<17} {score}  {g.reason}")
    counts = class_counts(graded)
    parts = [f"{n} {grade_label('class.' + k, lang)}" for k, n in counts.items() if n]
    lines.append(f"{len(graded)} {grade_label('submissions', lang)}: {', '.join(parts)}")
    return lines


# -- the page ---------------------------------------------------------------------------

CSS = """
:root { --ok: #1b7f3b; --warn: #b26a00; --bad: #b3261e; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, "Noto Sans", "Noto Sans CJK SC", sans-serif; margin: 0;
  color: #202124; background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
.muted { color: var(--muted); }
.chips { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0; }
.chip { border-radius: 14px; padding: 3px 12px; border: 1px solid var(--line); }
.chip b { font-size: 17px; margin-right: 4px; }
.c-ok { background: #e6f4ea; } .c-wrong-predictions { background: #fef7e0; }
.c-kernel-disagreed { background: #fce8e6; } .c-truncated { background: #f1f3f4; }
.c-inconsistent { background: #fad2cf; } .c-unreadable { background: #e8eaed; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; background: #f8f9fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { background: #f1f3f4; border-radius: 3px; height: 14px; width: 240px; }
.bar > span { display: block; height: 14px; border-radius: 3px; background: var(--ok); }
.bar.low > span { background: var(--bad); } .bar.mid > span { background: var(--warn); }
code { background: #f1f3f4; padding: 0 4px; border-radius: 3px; }
.expl { max-width: 520px; }
.mark { font-weight: 700; text-align: center; }
.who { font-size: 12px; white-space: normal; text-align: left; }
.m1 { color: var(--ok); } .m0 { color: var(--bad); }
.note { border-left: 4px solid var(--warn); padding: 6px 12px; background: #fef7e0; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _explanation(graded: Sequence[Graded], lab: str, step: str, lang: str) -> str:
    """The step's explanation from a run of the class, in the page's language if one has it."""
    texts = [
        (g.lang == lang, g.explanations[step])
        for g in graded
        if g.lab == lab and g.klass in TRUSTED and g.explanations.get(step)
    ]
    texts.sort(key=lambda item: not item[0])
    return texts[0][1] if texts else ""


def _wrong_rows(graded: Sequence[Graded], wrong: Sequence[WrongPrediction], lang: str) -> str:
    rows = []
    for w in wrong:
        truth = (
            ", ".join(w.truths)
            if len(w.truths) <= 2
            else f"{grade_label('differs', lang)} ({w.truths[0]}, ...)"
        )
        answer = grade_label("no_answer", lang) if w.answer is None else w.answer
        rows.append(
            "<tr>"
            f'<td class="num">{len(w.students)}'
            f'<div class="muted who">{_e(", ".join(w.students))}</div></td>'
            f"<td><code>{_e(w.step)}</code></td>"
            f"<td><code>{_e(w.key)}</code><div class=muted>{_e(w.question)}</div></td>"
            f"<td><code>{_e(answer)}</code></td>"
            f"<td><code>{_e(truth)}</code></td>"
            f'<td class="expl">{_e(unwrap(_explanation(graded, w.lab, w.step, lang)))}</td>'
            "</tr>"
        )
    return "\n".join(rows)


def html_page(graded: Sequence[Graded], directory: str, lang: str) -> str:
    """The class page: counts per class, per-step pass rates, the most common wrong
    predictions with the explanation each needs, and every student's line."""

    def L(key: str) -> str:
        return _e(grade_label(key, lang))

    counts = class_counts(graded)
    chips = "".join(
        f'<span class="chip c-{k}"><b>{n}</b>{L("class." + k)}</span>' for k, n in counts.items()
    )
    sections = []
    columns = step_columns(graded)
    wrong_all = wrong_predictions(graded)
    for lab in sorted({lab for lab, _ in columns}):
        rates = []
        for lab_name, step, passed, runs in pass_rates(graded):
            if lab_name != lab:
                continue
            pct = 100 * passed / runs if runs else 0.0
            level = "" if pct >= 75 else " mid" if pct >= 40 else " low"
            bar = (
                f'<div class="bar{level}" role="img" aria-label="{pct:.0f}%">'
                f'<span style="width:{pct:.1f}%"></span></div>'
                if runs
                else "-"
            )
            rates.append(
                f"<tr><td><code>{_e(step)}</code></td><td>{bar}</td>"
                f'<td class="num">{passed}/{runs}</td>'
                f'<td class="num">{(f"{pct:.0f}%" if runs else "-")}</td></tr>'
            )
        wrong = [w for w in wrong_all if w.lab == lab][:TOP_WRONG]
        wrong_html = (
            f"<table><thead><tr><th>{L('count')}</th><th>{L('step')}</th>"
            f"<th>{L('question')}</th><th>{L('answered')}</th><th>{L('truth')}</th>"
            f"<th>{L('explanation')}</th></tr></thead><tbody>"
            f"{_wrong_rows(graded, wrong, lang)}</tbody></table>"
            if wrong
            else f"<p class=muted>{L('wrong_none')}</p>"
        )
        sections.append(
            f'<section id="lab-{_e(lab)}"><h2>{L("lab")} <code>{_e(lab)}</code></h2>'
            f"<h3>{L('pass_rates')}</h3><p class=muted>{L('pass_rates_note')}</p>"
            f"<table><thead><tr><th>{L('step')}</th><th>{L('rate')}</th>"
            f"<th>{L('passed')}/{L('runs')}</th><th>%</th></tr></thead>"
            f"<tbody>{''.join(rates)}</tbody></table>"
            f"<h3>{L('wrong')}</h3>{wrong_html}</section>"
        )
    students = []
    for g in graded:
        score = f"{g.quiz['score']}" if g.quiz and g.klass in TRUSTED else "-"
        marks = "".join(
            f'<span class="m{c}">{"✓" if c == "1" else "✗"}</span>'
            if c
            else '<span class="muted">·</span>'
            for lab, step in columns
            if lab == g.lab
            for c in [_step_cell(g, lab, step)]
        )
        same = (
            f'<div class="muted">{L("same_run_as")} {_e(", ".join(g.same_run_as))}</div>'
            if g.same_run_as
            else ""
        )
        students.append(
            f'<tr class="c-{g.klass}"><td>{_e(g.name)}</td><td>{_e(g.lab or "-")}</td>'
            f"<td>{L('class.' + g.klass)}</td>"
            f'<td class="num">{_e(score)}</td><td class="mark">{marks}</td>'
            f"<td>{_e(g.reason)}{same}</td></tr>"
        )
    stop = L("stop")
    count_line = f"{len(graded)} {L('submissions')}{stop}{L('generated')} {_e(__version__)}{stop}"
    return f"""<!DOCTYPE html>
<html lang="{_e(lang)}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{L("title")}: {_e(directory)}</title>
<style>{CSS}</style>
</head>
<body><main>
<h1>{L("title")}: <code>{_e(directory)}</code></h1>
<p class=muted>{count_line}</p>
<div class="chips">{chips}</div>
<p class="note">{L("limits")}</p>
{"".join(sections)}
<h2>{L("students")}</h2>
<table><thead><tr><th>{L("student")}</th><th>{L("lab")}</th><th>{L("class")}</th>
<th>{L("score")}</th><th>{L("steps")}</th><th>{L("reason")}</th></tr></thead>
<tbody>
{chr(10).join(students)}
</tbody></table>
</main></body>
</html>
"""
