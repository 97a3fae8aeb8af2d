"""``explain [state|lab] NAME``: options in, one call to ``render.explain``, text out."""

from __future__ import annotations

import sys

from handshake_lab.render.explain import ambiguity, explain_named, explain_topic
from handshake_lab.render.text import DEFAULT_WIDTH


def explain_command(first: str, second: str | None, lang: str, width: int = DEFAULT_WIDTH) -> str:
    """``explain NAME`` or ``explain state|lab NAME``, wrapped to ``width``; the note of an
    ambiguous name goes to stderr (one line), the explanation is returned for stdout."""
    if second is not None:
        return explain_named(first, second, lang, width)  # a kind not in KINDS: UsageError
    note = ambiguity(first)
    if note is not None:
        sys.stderr.write(f"handshake-lab: note: {note}\n")
    return explain_topic(first, lang, width)
