"""The course view (``handshake-lab list``): the built-in labs grouped by level, in order.

Everything shown comes from the labs' ``[course]`` tables, which the loader checks against
the steps (``course.states`` must be exactly the states the steps expect); a state that only
the namespace steps expect is marked ``(netns)``. Text fits 80 columns in either language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handshake_lab.i18n.labels import label
from handshake_lab.i18n.lang import pick
from handshake_lab.placement.place import peer_refusal
from handshake_lab.render.text import DEFAULT_WIDTH, wrap
from handshake_lab.spec.loader import shown_states
from handshake_lab.spec.model import LEVELS, Lab


def course_order(labs: Sequence[Lab]) -> list[Lab]:
    """Labs in course order: by level, then order; labs without a course last, by name."""
    return sorted(
        labs,
        key=lambda lab: (
            (0, lab.course.level, lab.course.order, lab.name)
            if lab.course is not None
            else (1, 0, 0, lab.name)
        ),
    )


def netns_only_states(lab: Lab) -> set[str]:
    """States that only the netns steps of a lab that also runs on loopback expect."""
    if "loopback" not in lab.topologies:
        return set()
    on_loopback = {s.name for s in shown_states(lab.steps_for("loopback"))}
    return {s.name for s in shown_states(lab.steps)} - on_loopback


def _duration(lab: Lab) -> str:
    if lab.course is None:
        return ""
    return ", ".join(f"{topo} {secs} s" for topo, secs in lab.course.duration.items())


def course_lines(labs: Sequence[Lab], lang: str, width: int = DEFAULT_WIDTH) -> list[str]:
    """Three lines a lab (name, time, privileges; summary; states), under level headings."""
    lines: list[str] = []
    current: int | None = -1
    name_width = max((len(lab.name) for lab in labs), default=0) + 1
    for lab in course_order(labs):
        level = lab.course.level if lab.course is not None else None
        if level != current:
            if lines:
                lines.append("")
            if level is None:
                lines.append(label("no_level", lang))
            else:
                lines.append(label("level", lang).format(n=level, name=LEVELS[level].get(lang)))
            current = level
        order = f"{lab.course.order:>2}" if lab.course is not None else " -"
        privileges = label(f"priv_{lab.course.privileges}", lang) if lab.course else ""
        lines.append(f"{order} {lab.name:<{name_width}}{_duration(lab):<25}{privileges}".rstrip())
        lines += wrap(lab.summary.get(lang), width, indent="   ")
        if lab.course is not None:
            netns_only = netns_only_states(lab)
            words = [
                s.name + (" (netns)" if s.name in netns_only else "") + ","
                for s in lab.course.states
            ]
            if words:
                words[-1] = words[-1].rstrip(",")
            first = f"   {label('states_shown', lang)}"
            lines += wrap(" ".join(words), width, first=first, indent="     ")
    lines += ["", label("course_help", lang)]
    return lines


def sheet_nav(lab: Lab, labs: Sequence[Lab], lang: str) -> str:
    """The line an exercise sheet (``labs/NAME.md``) ends each language's part with: its place
    in the course and links to the previous and next sheets (a test keeps them so)."""
    ordered = [item for item in course_order(labs) if item.course is not None]
    assert lab.course is not None, f"{lab.name} has no [course]"
    i = [item.name for item in ordered].index(lab.name)
    level = lab.course.level
    parts = [
        label("sheet_nav", lang).format(
            i=i + 1, n=len(ordered), level=level, name=LEVELS[level].get(lang)
        )
    ]
    if i > 0:
        parts.append(label("sheet_prev", lang).format(lab=ordered[i - 1].name))
    if i + 1 < len(ordered):
        parts.append(label("sheet_next", lang).format(lab=ordered[i + 1].name))
    return (" " if pick(lang) == "en" else "").join(parts)


def course_document(labs: Sequence[Lab], lang: str) -> dict[str, Any]:
    """``list --json``: the same facts for scripts, one JSON document (docs/labs.md)."""
    out: list[dict[str, Any]] = []
    for lab in course_order(labs):
        course = lab.course
        netns_only = netns_only_states(lab)
        out.append(
            {
                "name": lab.name,
                "title": lab.title.get(lang),
                "summary": lab.summary.get(lang),
                "level": course.level if course else None,
                "order": course.order if course else None,
                "duration": dict(course.duration) if course else None,
                "topologies": list(lab.topologies),
                "privileges": course.privileges if course else None,
                "states": [s.name for s in course.states] if course else None,
                "netns_only_states": sorted(netns_only),
                "steps": {topo: len(lab.steps_for(topo)) for topo in lab.topologies},
                "peer_refusal": peer_refusal(lab),
                "file": f"labs/{lab.name}.toml",
                "sheet": f"labs/{lab.name}.md",
            }
        )
    return {
        "schema": 1,
        "lang": lang,
        "levels": {str(n): text.get(lang) for n, text in LEVELS.items()},
        "labs": out,
    }
