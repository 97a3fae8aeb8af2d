"""The languages and the one fallback rule every text lookup uses.

A language is chosen once, at the edge (``--lang`` or the locale), and applied only where text is
drawn. Anything that is not a known language falls back to English; nothing else decides that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum


class Lang(StrEnum):
    en = "en"
    zh = "zh"


LANGS: tuple[str, ...] = tuple(lang.value for lang in Lang)
DEFAULT_LANG = Lang.en.value


def pick(lang: str | None) -> str:
    """``lang`` if it is a known language, else the default: the one fallback rule."""
    return lang if lang in LANGS else DEFAULT_LANG


def checked(lang: str) -> str:
    """``lang`` if known; ``ValueError`` otherwise (for code that must not fall back)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
    return lang


def from_locale(environ: Mapping[str, str] | None = None) -> str:
    """The language of the locale (LC_ALL, LC_MESSAGES, LANG, LANGUAGE, first set wins)."""
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = env.get(var, "")
        if value:
            return Lang.zh.value if value.lower().startswith("zh") else DEFAULT_LANG
    return DEFAULT_LANG


def resolve(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The language a command uses: the option if given, else the locale's."""
    return pick(option) if option else from_locale(environ)


def in_lang(texts: Mapping[str, str], lang: str) -> str:
    """The entry of ``texts`` (lang -> text) for ``lang``: else English, else the one there is
    (a run read back from NDJSON has its texts in the language it was saved in)."""
    for key in (pick(lang), DEFAULT_LANG):
        if key in texts:
            return texts[key]
    return next(iter(texts.values()), "")
