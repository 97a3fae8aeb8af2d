"""Words for the RFC state machine (``handshake_lab.tcp.machine``): event labels and the
generated one-line descriptions of its transitions, in each language.

The machine itself holds no words; this module turns its table into text, so ``explain`` and the
state diagram are generated from the same table the tests check.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from handshake_lab.i18n.lang import LANGS, checked
from handshake_lab.tcp.machine import LIFECYCLE_ORDER, Event, step, transitions_from
from handshake_lab.tcp.states import TcpState

# Labels for the generated descriptions; our own words, short enough for an 80-column line.
EVENT_LABELS: Final[Mapping[Event, Mapping[str, str]]] = MappingProxyType(
    {
        Event.PASSIVE_OPEN: {"en": "listen()", "zh": "调用 listen()"},
        Event.ACTIVE_OPEN: {"en": "connect()", "zh": "调用 connect()"},
        Event.CLOSE: {"en": "close()", "zh": "调用 close()"},
        Event.SEND_EOF: {"en": "shutdown(SHUT_WR)", "zh": "调用 shutdown(SHUT_WR)"},
        Event.ABORT: {"en": "abort (linger 0)", "zh": "强制关闭（linger 0）"},
        Event.RCV_SYN: {"en": "receive SYN", "zh": "收到 SYN"},
        Event.RCV_SYN_ACK: {"en": "receive SYN+ACK", "zh": "收到 SYN+ACK"},
        Event.RCV_ACK: {"en": "receive ACK", "zh": "收到 ACK"},
        Event.RCV_FIN: {"en": "receive FIN", "zh": "收到 FIN"},
        Event.RCV_FIN_ACK: {
            "en": "receive FIN acking our FIN",
            "zh": "收到 FIN（并确认我方 FIN）",
        },
        Event.RCV_RST: {"en": "receive RST", "zh": "收到 RST"},
        Event.TIMEOUT_2MSL: {
            "en": "TIME_WAIT timer (60 s)",
            "zh": "TIME_WAIT 计时到期（60 秒）",
        },
    }
)

_SEND_WORD: Final[Mapping[str, str]] = MappingProxyType({"en": "send", "zh": "发送"})


def format_transition(state: TcpState, event: Event, lang: str = "en") -> str:
    """One line such as ``"FIN_WAIT2 --receive FIN / send ACK--> TIME_WAIT"``."""
    known = checked(lang)
    transition = step(state, event)
    label = EVENT_LABELS[event][known]
    if transition.sends:
        label = f"{label} / {_SEND_WORD[known]} {transition.sends_text}"
    return f"{state.name} --{label}--> {transition.next_state.name}"


def describe_transitions(state: TcpState, lang: str = "en") -> list[str]:
    """Every legal transition out of ``state`` as a line of text, in :class:`Event` order.

    ``lang`` is "en" or "zh" (see :data:`LANGS`); anything else raises ``ValueError``.
    """
    checked(lang)
    return [format_transition(state, event, lang) for event, _ in transitions_from(state)]


def describe_table(lang: str = "en") -> list[str]:
    """The whole machine as text lines, state by state in :data:`LIFECYCLE_ORDER`."""
    checked(lang)
    return [line for state in LIFECYCLE_ORDER for line in describe_transitions(state, lang)]


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide and full-width characters count 2."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def event_label(event: Event, lang: str = "en") -> str:
    """Short human label of ``event`` ("receive FIN", "收到 FIN")."""
    return EVENT_LABELS[event][checked(lang)]


__all__ = [
    "EVENT_LABELS",
    "LANGS",
    "describe_table",
    "describe_transitions",
    "display_width",
    "event_label",
    "format_transition",
]
