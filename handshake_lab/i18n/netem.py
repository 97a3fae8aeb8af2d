"""The words of ``sweep`` (its table, CSV header names stay English) and of ``doctor``'s netem
line, in each language; the fallback rule of ``lang.pick`` (English where a word is missing)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from handshake_lab.i18n.lang import DEFAULT_LANG, pick

NETEM_LABELS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "netem_ok": (
                "available: --delay and --loss add round-trip time and loss between the lab's "
                "namespaces (tc netem), and 'sweep LAB --delay 0,50,200' compares the runs"
            ),
            "netem_missing": (
                "this kernel has no netem qdisc ({detail}): --delay, --loss and a sweep with a "
                "delay other than 0 are refused before step 1 (exit 13); every lab still runs "
                "at the machine's own speed. The lab VMs (make vm-check) have netem"
            ),
            "netem_unknown": "could not be probed ({detail}): --delay/--loss may be refused",
            "heading": "{lab}: {topology}, RTT added {delay} ms, loss {loss} %",
            "verdict_pass": "kernel agreed",
            "verdict_fail": "kernel DISAGREED",
            "verdict_none": "interrupted",
            "measured": "kernel measured (first RTT sample)",
            "side": "side",
            "state": "state",
            "entered": "entered",
            "left": "left",
            "duration": "duration",
            "answer": "answer after",
            "next": "then",
            "still": "(still)",
            "legend": (
                "Times in ms since the run began. duration: from the transition that entered "
                "the state to the one that left it (holds included). answer after: from the "
                "last segment that end sent in the state to the transition its answer caused: "
                "one RTT, hold or no hold (only where that answer was not a resent one, and "
                "for sockets captured where they send: on loopback all, in namespaces the "
                "clients)."
            ),
            "untraced": (
                "no transition stream in this run (it needs real root): entered and left are "
                "the table reads that first showed each state, up to one poll late, and "
                "answer after cannot be measured"
            ),
            "summary": "Duration (answer after) of each state, per RTT added",
            "plot_title": "{lab}: time in each state against the RTT added",
            "plot_x": "RTT added (ms)",
            "plot_y": "time (ms)",
            "plot_note": (
                "Solid: answer after (from the segment that was answered to the transition; "
                "the RTT the kernel lived with). Dashed: the whole stay in the state, holds "
                "included. Dots: the kernel's own srtt of that socket (tcp_info)."
            ),
            "srtt": "kernel srtt",
        },
        "zh": {
            "netem_ok": (
                "可用：--delay 和 --loss 会在实验的网络命名空间之间加上往返时延和丢包"
                "（tc netem），'sweep LAB --delay 0,50,200' 可以比较各次运行"
            ),
            "netem_missing": (
                "此内核没有 netem 排队规则（{detail}）：--delay、--loss 以及时延不为 0 的 "
                "sweep 会在第 1 步之前被拒绝（退出码 13）；所有实验仍可按本机原有速度运行。"
                "实验虚拟机（make vm-check）带有 netem"
            ),
            "netem_unknown": "无法探测（{detail}）：--delay/--loss 可能会被拒绝",
            "heading": "{lab}：{topology}，附加 RTT {delay} 毫秒，丢包 {loss} %",
            "verdict_pass": "内核一致",
            "verdict_fail": "内核不一致",
            "verdict_none": "已中断",
            "measured": "内核测得（第一个 RTT 样本）",
            "side": "端",
            "state": "状态",
            "entered": "进入",
            "left": "离开",
            "duration": "停留",
            "answer": "应答用时",
            "next": "之后",
            "still": "（仍在）",
            "legend": (
                "时间单位为毫秒，从运行开始计。停留：从进入该状态的转换到离开它的转换（含人为"
                "扣留）。应答用时：从这一端在该状态下发出的最后一个报文段，到对方应答引起的"
                "转换：恰好一个 RTT，无论是否扣留（只在该应答不是重传时给出，且只对在发送处"
                "被抓包的套接字给出：回环上全部，命名空间里是客户端）。"
            ),
            "untraced": (
                "这次运行没有状态转换流（需要真正的 root）：进入和离开的时间是最先显示该状态的那次"
                "套接字表读取，最多晚一个轮询间隔；应答用时无法测量"
            ),
            "summary": "各状态的停留（应答用时），按附加 RTT",
            "plot_title": "{lab}：各状态用时与附加 RTT 的关系",
            "plot_x": "附加 RTT（毫秒）",
            "plot_y": "时间（毫秒）",
            "plot_note": (
                "实线：应答用时（从被应答的报文段到状态转换，即内核实际经历的 RTT）。虚线：在该"
                "状态的全部停留，含扣留。圆点：内核自己测得的该套接字 srtt（tcp_info）。"
            ),
            "srtt": "内核 srtt",
        },
    }
)


def netem_label(key: str, lang: str) -> str:
    """The word ``key`` in ``lang`` (English where the language lacks it)."""
    table = NETEM_LABELS[pick(lang)]
    return table[key] if key in table else NETEM_LABELS[DEFAULT_LANG][key]


__all__ = ["NETEM_LABELS", "netem_label"]
