"""``quiz template LAB``: the blank answers file a student fills in, in the chosen language.

Its steps and keys are exactly what ``lab.quiz.askable`` says each step may ask, so a filled
template always loads with ``--answers`` (which reads it strictly); the questions are TOML
comments above their keys.
"""

from __future__ import annotations

import re

from handshake_lab.i18n.labels import label
from handshake_lab.lab.quiz import Askable, askable
from handshake_lab.spec.model import Lab, Step

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else f'"{name}"'


def _question(ask: Askable, lang: str) -> list[str]:
    if ask.kind == "state":
        return [label("q_state", lang).format(side=ask.key)]
    if ask.kind == "outcome":
        return [label("q_outcome", lang)]
    key = "q_ack_fin" if ask.names in {("u",), ("w",)} else "q_ack_data"
    return [label(key, lang).format(name=ask.names[0]), label("q_ack_when", lang)]


def _step_lines(step: Step, lang: str) -> list[str]:
    lines = [f"[{_key(step.id)}]"]
    lines.append(
        "# " + label("tmpl_step", lang).format(i=step.index, actor=step.actor, action=step.action)
    )
    if step.only is not None:
        lines.append("# " + label("tmpl_only", lang).format(topo=step.only))
    for ask in askable(step):
        lines += [f"# {text}" for text in _question(ask, lang)]
        lines.append(f'{_key(ask.key)} = ""')
    return lines


def answers_template(lab: Lab, lang: str, topology: str | None = None) -> str:
    """The answers file for ``lab``: every step that asks something (of ``topology``, or of
    every topology the lab has), each question commented above an empty answer."""
    steps = lab.steps if topology is None else lab.steps_for(topology)
    head = [
        label("tmpl_head", lang).format(name=lab.name, title=lab.title.get(lang)),
        label("tmpl_fill", lang),
        f"    handshake-lab run {lab.name} --answers answers.toml",
        label("tmpl_states", lang),
        label("tmpl_numbers", lang),
        label("tmpl_blank", lang),
    ]
    lines = [f"# {line}" for line in head]
    for step in steps:
        if askable(step):
            lines += ["", *_step_lines(step, lang)]
    return "\n".join(lines) + "\n"
