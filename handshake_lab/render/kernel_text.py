"""Texts that quote the running kernel: ``{sysctl:KEY}`` and ``{rtt:SIDE}`` filled from the
run record.

A lab's explanation must hold on the kernel it runs on, so a figure that differs between
kernels (SYN retransmission timers, tcp_fin_timeout...) is written as a placeholder and filled,
when the text is drawn, with the value the run's client end read at the start of the run
(``LabStarted.kernel``). A sysctl this kernel lacks reads "not on this kernel" in the chosen
language, so the sentence around it can say what that means.

``{rtt:SIDE}`` in a step's explanation is the smoothed RTT the kernel measured for that side's
socket right after the step (``StepReport.tcp_info``, what ``ss -i`` prints as ``rtt:``), so
"the SYN-ACK came one RTT later" names the RTT of this run: microseconds on loopback, the
``--delay`` set in namespaces. Where the step has no figure for the side it reads "not
measured".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from handshake_lab.i18n.labels import label
from handshake_lab.spec.model import RTT_PLACEHOLDER, SYSCTL_PLACEHOLDER

TcpInfos = Mapping[str, Mapping[str, float]]


def kernel_text(
    text: str, kernel: Mapping[str, str | None], lang: str, tcp_info: TcpInfos | None = None
) -> str:
    """``text`` with every ``{sysctl:KEY}`` replaced by the kernel's value of KEY and every
    ``{rtt:SIDE}`` by the srtt in ``tcp_info`` (a step's) for SIDE."""

    def value(match: re.Match[str]) -> str:
        found = kernel.get(match.group(1))
        return found if found is not None else label("no_sysctl", lang)

    def rtt(match: re.Match[str]) -> str:
        measured = (tcp_info or {}).get(match.group(1), {}).get("rtt_ms")
        return f"{measured:.1f} ms" if measured else label("no_rtt", lang)

    return RTT_PLACEHOLDER.sub(rtt, SYSCTL_PLACEHOLDER.sub(value, text))


def filler(
    kernel: Mapping[str, str | None], lang: str, tcp_info: TcpInfos | None = None
) -> Callable[[str], str]:
    """``kernel_text`` with the run's figures (and a step's ``tcp_info``) bound."""
    return lambda text: kernel_text(text, kernel, lang, tcp_info)
