"""``quiz template LAB``: options in, one call to ``render.answers``, the file on stdout."""

from __future__ import annotations

import sys

from handshake_lab.errors import ExitStatus, UsageError
from handshake_lab.render.answers import answers_template
from handshake_lab.spec.loader import find_lab


def quiz_template_command(name: str, lang: str, topology: str | None) -> ExitStatus:
    lab = find_lab(name)
    if topology is not None and topology not in lab.topologies:
        raise UsageError(
            f"lab {lab.name} runs with --topology {' or '.join(lab.topologies)}, not {topology}"
        )
    sys.stdout.write(answers_template(lab, lang, topology))
    return ExitStatus.OK
