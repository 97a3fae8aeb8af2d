"""``explain [state|lab] NAME``: the explanation alone, generated from the same data the runs use.

A few names are both a state and a lab (``close``: the state CLOSE and the lab close).
``explain NAME`` keeps answering with the state, as it always did, and says so in a note (the
CLI puts it on stderr); ``explain state NAME`` and ``explain lab NAME`` pick one.
"""

from __future__ import annotations

import difflib

from handshake_lab.errors import LabNotFoundError, UsageError
from handshake_lab.i18n.labels import label
from handshake_lab.i18n.machine import describe_transitions
from handshake_lab.i18n.states import state_text
from handshake_lab.spec.loader import builtin_names, find_lab
from handshake_lab.tcp.states import TcpState, parse_state

KINDS = ("state", "lab")


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


def explain_named(kind: str, topic: str, lang: str) -> str:
    """``explain state NAME`` / ``explain lab NAME``: only that kind, no guessing."""
    if kind == "state":
        if not _is_state(topic):
            options = [s.name for s in TcpState] + ["ABSENT"]
            close = difflib.get_close_matches(topic.upper(), options, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise LabNotFoundError(f"{topic!r} is not a TCP state{hint}")
        return _state_or_absent(topic, lang)
    if kind == "lab":
        return explain_lab(topic, lang)
    raise UsageError(f"explain {kind} NAME: the kind is 'state' or 'lab', not {kind!r}")


def _state_or_absent(topic: str, lang: str) -> str:
    state = parse_state(topic)
    if state is not None:
        return explain_state(state, lang)
    text = state_text("ABSENT", lang)
    return f"ABSENT - {text.title}\n\n{text.body}"


def explain_lab(topic: str, lang: str) -> str:
    lab = find_lab(topic)
    lines = [f"{lab.name} - {lab.title.get(lang)}", "", lab.summary.get(lang)]
    if lab.intro is not None:
        lines += ["", lab.intro.get(lang)]
    for step in lab.steps:
        lines += ["", f"{step.index}. {step.actor}: {step.action} ({step.id})"]
        lines.append(step.explain.get(lang))
    return "\n".join(lines)


def explain_topic(topic: str, lang: str) -> str:
    """``explain NAME``: a state if it is one (every spelling), else a lab."""
    if _is_state(topic):
        return _state_or_absent(topic, lang)
    if _looks_like_lab(topic):
        return explain_lab(topic, lang)
    options = [s.name for s in TcpState] + builtin_names()
    close = difflib.get_close_matches(topic, options, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise LabNotFoundError(f"{topic!r} is neither a TCP state nor a lab{hint}")


def explain_state(state: TcpState, lang: str) -> str:
    text = state_text(state.name, lang)
    heading = f"{state.name} (RFC 9293: {state.rfc_name}) - {text.title}"
    lines = [heading, "", text.body]
    moves = describe_transitions(state, lang)
    if moves:
        lines += ["", label("transitions", lang)]
        lines += [f"  {m}" for m in moves]
    return "\n".join(lines)
