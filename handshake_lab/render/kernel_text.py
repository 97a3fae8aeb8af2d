"""Texts that quote the running kernel: ``{sysctl:KEY}`` filled from the run record.

A lab's explanation must hold on the kernel it runs on, so a figure that differs between
kernels (SYN retransmission timers, tcp_fin_timeout...) is written as a placeholder and filled,
when the text is drawn, with the value the run's client end read at the start of the run
(``LabStarted.kernel``). A sysctl this kernel lacks reads "not on this kernel" in the chosen
language, so the sentence around it can say what that means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from handshake_lab.i18n.labels import label
from handshake_lab.spec.model import SYSCTL_PLACEHOLDER


def kernel_text(text: str, kernel: Mapping[str, str | None], lang: str) -> str:
    """``text`` with every ``{sysctl:KEY}`` replaced by the kernel's value of KEY."""

    def value(match: re.Match[str]) -> str:
        found = kernel.get(match.group(1))
        return found if found is not None else label("no_sysctl", lang)

    return SYSCTL_PLACEHOLDER.sub(value, text)


def filler(kernel: Mapping[str, str | None], lang: str) -> Callable[[str], str]:
    return lambda text: kernel_text(text, kernel, lang)
