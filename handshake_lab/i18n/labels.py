"""The few words of the user interface, in each language. Explanations live in the labs and
in ``states.toml`` beside this module; these are only headings and verdicts."""

from __future__ import annotations

from handshake_lab.i18n.lang import DEFAULT_LANG, pick

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "step": "Step",
        "side": "side",
        "expected": "expected",
        "kernel": "kernel",
        "detail": "ss / psutil, 4-tuple",
        "agrees": "kernel agrees",
        "disagrees": "kernel disagrees",
        "why": "Why",
        "outcome": "outcome",
        "received": "received",
        "facts": "read back",
        "loop": "loop",
        "topology": "topology",
        "ports": "ports",
        "observers": "observers",
        "passed": "PASSED: the kernel agreed with every step",
        "failed": "FAILED: the kernel disagreed with step(s)",
        "absent": "not in the kernel's table",
        "no_socket": "no socket yet",
        "press_enter": "Press Enter for step",
        "settle": "waited",
        "lab": "Lab",
        "timer": "timer",
        "pid": "pid",
        "no_pid": "psutil pid: none (kernel-owned)",
        "transitions": "Transitions:",
        "after": "after",
        "application call": "application call",
        "seen_in_table": "seen in the table",
        "traced_as": "traced",
        "dropped_by": "DROPPED by hold",
        "no_sysctl": "not on this kernel",
        "waiting": "waiting for the kernel",
        "timeout": "timeout",
        "must_hold": "must hold",
    },
    "zh": {
        "step": "步骤",
        "side": "端",
        "expected": "预期",
        "kernel": "内核",
        "detail": "ss / psutil，四元组",
        "agrees": "内核一致",
        "disagrees": "内核不一致",
        "why": "原因",
        "outcome": "结果",
        "received": "收到",
        "facts": "读回",
        "loop": "事件循环",
        "topology": "拓扑",
        "ports": "端口",
        "observers": "观测来源",
        "passed": "通过：每一步内核状态都与预期一致",
        "failed": "失败：以下步骤内核状态与预期不符",
        "absent": "内核表中没有",
        "no_socket": "尚无套接字",
        "press_enter": "按回车执行步骤",
        "settle": "等待",
        "lab": "实验",
        "timer": "计时器",
        "pid": "进程",
        "no_pid": "psutil pid：无（内核持有）",
        "transitions": "状态转换：",
        "after": "起因",
        "application call": "应用程序调用",
        "seen_in_table": "由套接字表看到",
        "traced_as": "跟踪点记为",
        "dropped_by": "被规则丢弃",
        "no_sysctl": "此内核没有",
        "waiting": "等待内核",
        "timeout": "超时",
        "must_hold": "须保持",
    },
}


def label(key: str, lang: str) -> str:
    """The interface word ``key`` in ``lang`` (English where the language lacks it)."""
    table = LABELS[pick(lang)]
    return table[key] if key in table else LABELS[DEFAULT_LANG][key]
