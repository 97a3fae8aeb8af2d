"""Every word a user reads, in English and Chinese, keyed; one fallback rule (``lang.pick``).

- ``lang``: the languages, the fallback rule, the choice from ``--lang`` or the locale.
- ``labels``: the interface words (headings, verdicts).
- ``states``: the explanation of each TCP state (``states.toml``).
- ``machine``: the words for the RFC machine's events and its generated transition lines.

Lab texts live in the lab files and are picked with the same rule. Only ``render`` (and the
CLI's text-only commands) apply a language; records stay language-neutral.
"""

from handshake_lab.i18n.labels import label
from handshake_lab.i18n.lang import DEFAULT_LANG, LANGS, Lang, in_lang, pick, resolve
from handshake_lab.i18n.states import StateText, state_names, state_text

__all__ = [
    "DEFAULT_LANG",
    "LANGS",
    "Lang",
    "StateText",
    "in_lang",
    "label",
    "pick",
    "resolve",
    "state_names",
    "state_text",
]
