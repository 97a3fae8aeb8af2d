"""``explain STATE|LAB``: the explanation alone, generated from the same data the runs use.

The text is wrapped to ``width`` columns (``render.text``: display width, prose at most
``PROSE_MAX``), as the run's output is.
"""

from __future__ import annotations

import difflib

from handshake_lab.errors import LabNotFoundError
from handshake_lab.i18n.labels import label
from handshake_lab.i18n.machine import describe_transitions
from handshake_lab.i18n.states import state_text
from handshake_lab.render.text import DEFAULT_WIDTH, PROSE_MAX, wrap, wrap_paragraphs
from handshake_lab.spec.loader import builtin_names, find_lab
from handshake_lab.tcp.states import TcpState, parse_state

STEP_INDENT = "   "
"""A step's explanation under its heading (``3. client: send (hello)``)."""


def explain_topic(topic: str, lang: str, width: int = DEFAULT_WIDTH) -> str:
    prose = min(width, PROSE_MAX)
    state = parse_state(topic)
    if state is not None:
        return explain_state(state, lang, width)
    if topic.upper() == "ABSENT":
        text = state_text("ABSENT", lang)
        return "\n".join(
            [
                *wrap(f"ABSENT - {text.title}", width, first="", indent="  "),
                "",
                *wrap(text.body, prose),
            ]
        )
    looks_like_lab = "/" in topic or topic.endswith(".toml") or topic in builtin_names()
    if looks_like_lab:
        lab = find_lab(topic)
        lines = [*wrap(f"{lab.name} - {lab.title.get(lang)}", width, first="", indent="  "), ""]
        lines += wrap_paragraphs(lab.summary.get(lang), prose)
        if lab.intro is not None:
            lines += ["", *wrap_paragraphs(lab.intro.get(lang), prose)]
        for step in lab.steps:
            heading = f"{step.index}. {step.actor}: {step.action} ({step.id})"
            lines += ["", *wrap(heading, width, first="", indent=STEP_INDENT)]
            lines += wrap_paragraphs(step.explain.get(lang), prose, indent=STEP_INDENT)
        return "\n".join(lines)
    options = [s.name for s in TcpState] + builtin_names()
    close = difflib.get_close_matches(topic, options, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise LabNotFoundError(f"{topic!r} is neither a TCP state nor a lab{hint}")


def explain_state(state: TcpState, lang: str, width: int = DEFAULT_WIDTH) -> str:
    text = state_text(state.name, lang)
    heading = f"{state.name} (RFC 9293: {state.rfc_name}) - {text.title}"
    lines = [
        *wrap(heading, width, first="", indent="  "),
        "",
        *wrap(text.body, min(width, PROSE_MAX)),
    ]
    moves = describe_transitions(state, lang)
    if moves:
        lines += ["", *wrap(label("transitions", lang), width)]
        for move in moves:
            lines += wrap(move, width, first="  ", indent="      ")
    return "\n".join(lines)
