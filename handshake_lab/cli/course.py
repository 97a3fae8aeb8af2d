"""``list``: the course view of the built-in labs (``render.course``), as text or JSON."""

from __future__ import annotations

import json
import sys

from handshake_lab.render.course import course_document, course_lines
from handshake_lab.render.text import output_width
from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab


def list_command(lang: str, json_out: bool) -> None:
    labs = [load_lab(builtin_dir() / f"{name}.toml") for name in builtin_names()]
    if json_out:
        sys.stdout.write(json.dumps(course_document(labs, lang), ensure_ascii=False) + "\n")
        return
    for line in course_lines(labs, lang, output_width()):
        sys.stdout.write(line + "\n")
