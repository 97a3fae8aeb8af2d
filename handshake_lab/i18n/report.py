"""The words of the HTML report (``render/html.py``) and its live view, in each language.

Kept apart from ``labels`` (the terminal's words) so the two can change independently; the
same fallback rule applies (``lang.pick``: English where a language lacks a word).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from handshake_lab.i18n.lang import DEFAULT_LANG, pick
from handshake_lab.tcp.machine import Event

REPORT_LABELS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "lab": "Lab",
            "kernel": "kernel",
            "loop": "loop",
            "topology": "topology",
            "ports": "ports",
            "observers": "observers",
            "evidence": "evidence",
            "sysctls": "sysctls (read at the start of the run)",
            "verdict": "verdict",
            "passed": "PASSED: the kernel agreed with every step",
            "failed": "FAILED: the kernel disagreed with step(s)",
            "interrupted": "interrupted: the run has no result",
            "running": "running...",
            "waiting": "waiting for the lab to start",
            "ladder": "Ladder: the segments on the wire and the kernel's states",
            "ladder_note": (
                "Time runs down (ms since the run began; long pauses are shortened, their "
                "length written beside them). Bands along each lifeline: the state the kernel "
                "reported for that end (tracepoint, ss, psutil), never a model."
            ),
            "no_segments": (
                "No segments were captured in this run (capture needs root, or "
                "--topology netns); the states are in the steps below."
            ),
            "conversation": "connection",
            "diagram": "RFC 9293 state diagram, with this run's path",
            "diagram_note": (
                "Generated from the same transition table as 'explain'. Filled: states the "
                "kernel was seen in. Coloured arrows: the transitions each end took in this run."
            ),
            "offtable": "Moves outside the RFC table (how Linux does it):",
            "steps": "Steps",
            "step": "Step",
            "side": "side",
            "expected": "expected",
            "state": "kernel",
            "agree": "sources agree",
            "sources_differ": "sources differ",
            "where": "4-tuple, timer, owner",
            "agrees": "kernel agrees",
            "disagrees": "kernel disagrees",
            "outcome": "outcome",
            "received": "received",
            "facts": "read back",
            "holds": "holds",
            "hold_line": "nft counter: {n} dropped",
            "released": "released",
            "active": "active",
            "segments": "segments",
            "transitions": "transitions",
            "why": "Why",
            "dropped": "dropped",
            "forged": "forged by the lab",
            "retransmission": "retransmission",
            "first": "First step",
            "prev": "Previous step",
            "next": "Next step",
            "last": "Last step",
            "keys": "keys: left/right arrows, Home, End",
            "run_next": "Run step",
            "live": "live",
            "ended": "the lab has ended; the server is closed",
            "wire": "on the wire",
            "quiz": "quiz",
            "client": "client",
            "server": "server",
            "listener": "listener",
            "self_send": "the socket sends",
            "self_recv": "the same socket receives",
            "seen": "state seen by the kernel",
            "disagreement": "expected, kernel disagreed",
            "no_socket": "no socket yet",
            "absent": "not in the kernel's table",
            "no_pid": "no pid (kernel-owned)",
            "seen_in_table": "seen in the table",
            "after": "after",
            "application call": "application call",
            "traced_as": "traced as",
            "no_sysctl": "not on this kernel",
            "generated": "Drawn from the run record by handshake-lab",
        },
        "zh": {
            "lab": "实验",
            "kernel": "内核",
            "loop": "事件循环",
            "topology": "拓扑",
            "ports": "端口",
            "observers": "观测来源",
            "evidence": "证据",
            "sysctls": "sysctl（运行开始时读取）",
            "verdict": "结论",
            "passed": "通过：每一步内核状态都与预期一致",
            "failed": "失败：以下步骤内核状态与预期不符",
            "interrupted": "已中断：本次运行没有结果",
            "running": "运行中……",
            "waiting": "等待实验开始",
            "ladder": "时序图：线路上的报文段与内核报告的状态",
            "ladder_note": (
                "时间自上而下（自运行开始的毫秒数；较长的停顿被缩短，旁边标出实际长度）。"
                "每条生命线旁的色带是内核（跟踪点、ss、psutil）报告的该端状态，而不是模型的推测。"
            ),
            "no_segments": (
                "本次运行没有抓到报文段（抓包需要 root 或 --topology netns）；"
                "各端状态见下面的步骤。"
            ),
            "conversation": "连接",
            "diagram": "RFC 9293 状态图，标出本次运行的路径",
            "diagram_note": (
                "由 explain 使用的同一张转换表生成。填色：内核实际出现过的状态。"
                "彩色箭头：本次运行中各端实际经过的转换。"
            ),
            "offtable": "RFC 表之外的变化（Linux 的做法）：",
            "steps": "步骤",
            "step": "步骤",
            "side": "端",
            "expected": "预期",
            "state": "内核",
            "agree": "来源一致",
            "sources_differ": "来源不一致",
            "where": "四元组、计时器、所属进程",
            "agrees": "内核一致",
            "disagrees": "内核不一致",
            "outcome": "结果",
            "received": "收到",
            "facts": "读回",
            "holds": "拦截规则",
            "hold_line": "nft 计数器：丢弃 {n} 个",
            "released": "已解除",
            "active": "生效中",
            "segments": "报文段",
            "transitions": "状态转换",
            "why": "原因",
            "dropped": "被丢弃",
            "forged": "由实验伪造",
            "retransmission": "重传",
            "first": "第一步",
            "prev": "上一步",
            "next": "下一步",
            "last": "最后一步",
            "keys": "按键：左右方向键、Home、End",
            "run_next": "执行步骤",
            "live": "实时",
            "ended": "实验已结束；服务器已关闭",
            "wire": "线路检查",
            "quiz": "测验",
            "client": "客户端",
            "server": "服务器",
            "listener": "监听套接字",
            "self_send": "套接字发送",
            "self_recv": "同一个套接字接收",
            "seen": "内核出现过的状态",
            "disagreement": "预期状态（内核不一致）",
            "no_socket": "尚无套接字",
            "absent": "内核表中没有",
            "no_pid": "无进程（由内核持有）",
            "seen_in_table": "由套接字表看到",
            "after": "起因",
            "application call": "应用程序调用",
            "traced_as": "跟踪点记为",
            "no_sysctl": "此内核没有",
            "generated": "由 handshake-lab 根据运行记录绘制",
        },
    }
)

EDGE_WORDS: Final[Mapping[Event, Mapping[str, str]]] = MappingProxyType(
    {
        Event.PASSIVE_OPEN: {"en": "listen", "zh": "listen"},
        Event.ACTIVE_OPEN: {"en": "connect", "zh": "connect"},
        Event.CLOSE: {"en": "close", "zh": "close"},
        Event.SEND_EOF: {"en": "shutdown", "zh": "shutdown"},
        Event.ABORT: {"en": "abort", "zh": "abort"},
        Event.RCV_SYN: {"en": "SYN", "zh": "SYN"},
        Event.RCV_SYN_ACK: {"en": "SYN+ACK", "zh": "SYN+ACK"},
        Event.RCV_ACK: {"en": "ACK", "zh": "ACK"},
        Event.RCV_FIN: {"en": "FIN", "zh": "FIN"},
        Event.RCV_FIN_ACK: {"en": "FIN+ACK", "zh": "FIN+ACK"},
        Event.RCV_RST: {"en": "RST", "zh": "RST"},
        Event.TIMEOUT_2MSL: {"en": "60 s", "zh": "60 秒"},
    }
)
"""The short word an edge of the state diagram carries for an event (the full label, from
``i18n.machine.event_label``, is in the edge's tooltip)."""


def report_label(key: str, lang: str) -> str:
    """The report's word ``key`` in ``lang`` (English where the language lacks it)."""
    table = REPORT_LABELS[pick(lang)]
    return table[key] if key in table else REPORT_LABELS[DEFAULT_LANG][key]


def edge_word(event: Event, lang: str) -> str:
    return EDGE_WORDS[event][pick(lang)]


__all__ = ["EDGE_WORDS", "REPORT_LABELS", "edge_word", "report_label"]
