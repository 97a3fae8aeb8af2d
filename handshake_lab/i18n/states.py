"""Explanations of the TCP states, in English and Chinese.

The texts live in ``states.toml`` next to this module (shipped inside the wheel) and are read
once with ``importlib.resources``. Keys are Linux state names as in ``TcpState`` plus
``ABSENT`` (no socket). An unknown language falls back to English; an unknown key raises
``KeyError``. Bodies are wrapped in the file for editing; they are returned as one paragraph,
with line breaks between Chinese characters removed rather than turned into spaces.
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from handshake_lab.i18n.lang import pick

__all__ = ["StateText", "state_names", "state_text", "unwrap"]


@dataclass(frozen=True, slots=True)
class StateText:
    """A state's short title and a few sentences on what it means and how it is left."""

    title: str
    body: str


@cache
def _document() -> dict[str, Any]:
    raw = resources.files("handshake_lab.i18n").joinpath("states.toml").read_text(encoding="utf-8")
    return tomllib.loads(raw)


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in {"W", "F"}


def unwrap(text: str) -> str:
    """Join a hard-wrapped paragraph into one line.

    A line break becomes a space between Latin words and nothing where either neighbour is a
    wide (Chinese) character, so Chinese text gets no stray spaces.
    """
    out = ""
    for line in (part.strip() for part in text.strip().splitlines()):
        if not line:
            continue
        if out:
            out += "" if _wide(out[-1]) or _wide(line[0]) else " "
        out += line
    return out


def state_names() -> tuple[str, ...]:
    """Every state name that has a text (``ABSENT`` included), in file order."""
    return tuple(_document()["state"])


@cache
def state_text(state_name: str, lang: str) -> StateText:
    """The title and explanation of ``state_name`` (e.g. ``"TIME_WAIT"``) in ``lang``."""
    entry = _document()["state"][state_name][pick(lang)]
    return StateText(title=str(entry["title"]), body=unwrap(str(entry["body"])))
