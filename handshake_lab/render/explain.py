"""``explain [state|lab] NAME``: the explanation alone, generated from the same data the runs use.

A few names are both a state and a lab (``close``: the state CLOSE and the lab close).
``explain NAME`` keeps answering with the state, as it always did, and says so in a note (the
CLI puts it on stderr); ``explain state NAME`` and ``explain lab NAME`` pick one. The text is
wrapped to ``width`` columns (``render.text``: display width, prose at most ``PROSE_MAX``), as
the run's output is.
"""

from __future__ import annotations

import difflib

from handshake_lab.errors import LabNotFoundError, UsageError
from handshake_lab.i18n.labels import label
from handshake_lab.i18n.machine import describe_transitions
from handshake_lab.i18n.states import state_text
from handshake_lab.render.text import DEFAULT_WIDTH, PROSE_MAX, wrap, wrap_paragraphs
from handshake_lab.spec.loader import builtin_names, find_lab
from handshake_lab.tcp.states import TcpState, parse_state

KINDS = ("state", "lab")
STEP_INDENT = "   "


def _looks_like_lab(topic: str) -> bool:
    return "/" in topic or topic.endswith(".toml") or topic in builtin_names()


def _is_state(topic: str) -> bool:
    return parse_state(topic) is not None or topic.strip().upper() == "ABSENT"


def ambiguity(topic: str) -> str | None:
    """The note for a name that is both a state and a lab, or None."""
    state = parse_state(topic)
    if state is None or not _looks_like_lab(topic):
        return None
    return (
        f"{topic!r} is both the state {state.name} and the lab {topic}; showing the state "
        f"(say 'explain state {topic}' or 'explain lab {topic}')"
    )


def explain_named(kind: str, topic: str, lang: str, width: int = DEFAULT_WIDTH) -> str:
    """``explain state NAME`` / ``explain lab NAME``: only that kind, no guessing."""
    if kind == "state":
        if not _is_state(topic):
            options = [s.name for s in TcpState] + ["ABSENT"]
            close = difflib.get_close_matches(topic.upper(), options, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise LabNotFoundError(f"{topic!r} is not a TCP state{hint}")
        return _state_or_absent(topic, lang, width)
    if kind == "lab":
        return explain_lab(topic, lang, width)
    raise UsageError(f"explain {kind} NAME: the kind is 'state' or 'lab', not {kind!r}")


def _state_or_absent(topic: str, lang: str, width: int) -> str:
    state = parse_state(topic)
    if state is not None:
        return explain_state(state, lang, width)
    text = state_text("ABSENT", lang)
    return "\n".join(
        [
            *wrap(f"ABSENT - {text.title}", width, first="", indent="  "),
            "",
            *wrap(text.body, min(width, PROSE_MAX)),
        ]
    )


def explain_lab(topic: str, lang: str, width: int = DEFAULT_WIDTH) -> str:
    lab = find_lab(topic)
    prose = min(width, PROSE_MAX)
    lines = [*wrap(f"{lab.name} - {lab.title.get(lang)}", width, first="", indent="  "), ""]
    lines += wrap_paragraphs(lab.summary.get(lang), prose)
    if lab.intro is not None:
        lines += ["", *wrap_paragraphs(lab.intro.get(lang), prose)]
    for step in lab.steps:
        heading = f"{step.index}. {step.actor}: {step.action} ({step.id})"
        lines += ["", *wrap(heading, width, first="", indent=STEP_INDENT)]
        lines += wrap_paragraphs(step.explain.get(lang), prose, indent=STEP_INDENT)
    return "\n".join(lines)


def explain_topic(topic: str, lang: str, width: int = DEFAULT_WIDTH) -> str:
    """``explain NAME``: a state if it is one (every spelling), else a lab."""
    if _is_state(topic):
        return _state_or_absent(topic, lang, width)
    if _looks_like_lab(topic):
        return explain_lab(topic, lang, width)
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
