"""``explain STATE|LAB``: the explanation alone, generated from the same data the runs use."""

from __future__ import annotations

import difflib

from handshake_lab.errors import LabNotFoundError
from handshake_lab.i18n.labels import label
from handshake_lab.i18n.machine import describe_transitions
from handshake_lab.i18n.states import state_text
from handshake_lab.spec.loader import builtin_names, find_lab
from handshake_lab.tcp.states import TcpState, parse_state


def explain_topic(topic: str, lang: str) -> str:
    state = parse_state(topic)
    if state is not None:
        return explain_state(state, lang)
    if topic.upper() == "ABSENT":
        text = state_text("ABSENT", lang)
        return f"ABSENT - {text.title}\n\n{text.body}"
    looks_like_lab = "/" in topic or topic.endswith(".toml") or topic in builtin_names()
    if looks_like_lab:
        lab = find_lab(topic)
        lines = [f"{lab.name} - {lab.title.get(lang)}", "", lab.summary.get(lang)]
        if lab.intro is not None:
            lines += ["", lab.intro.get(lang)]
        for step in lab.steps:
            lines += ["", f"{step.index}. {step.actor}: {step.action} ({step.id})"]
            lines.append(step.explain.get(lang))
        return "\n".join(lines)
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
