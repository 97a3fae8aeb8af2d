"""The words of ``grade``'s class page and summary, in each language.

The machine-readable parts (the CSV's columns, ``--json``, the class names ``ok`` ...
``unreadable``) are language-neutral, as is each submission's reason (a diagnostic, like a
step's mismatch sentence); these are the page's headings and the class names as people read
them. The explanations a wrong prediction needs come from the lab's own texts in the runs.
"""

from __future__ import annotations

from handshake_lab.i18n.lang import DEFAULT_LANG, pick

GRADE_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Class grades",
        "submissions": "submissions",
        "generated": "Graded by handshake-lab",
        "stop": ". ",
        "class.ok": "ok",
        "class.wrong-predictions": "wrong predictions",
        "class.kernel-disagreed": "kernel disagreed",
        "class.truncated": "truncated",
        "class.inconsistent": "inconsistent (edited?)",
        "class.unreadable": "unreadable",
        "lab": "Lab",
        "pass_rates": "Per-step pass rates",
        "pass_rates_note": (
            "A step passes when the kernel agreed and every prediction for it was right; "
            "counted over the runs that reached it (inconsistent and unreadable runs are "
            "left out)."
        ),
        "step": "step",
        "passed": "passed",
        "runs": "runs",
        "rate": "rate",
        "wrong": "Most common wrong predictions",
        "wrong_none": "No wrong predictions.",
        "count": "students",
        "question": "question",
        "answered": "answered",
        "truth": "the kernel said",
        "explanation": "what they need to read",
        "students": "Students",
        "student": "student",
        "class": "class",
        "reason": "reason",
        "score": "score",
        "kernel": "kernel",
        "topology": "topology",
        "steps": "steps",
        "no_answer": "(no answer)",
        "differs": "differs per run",
        "same_run_as": "the same run as",
        "limits": (
            "A consistent record is not proof of a real run: it proves the file is complete "
            "and agrees with itself, not that a kernel produced it (docs/grading.md)."
        ),
    },
    "zh": {
        "title": "班级成绩",
        "submissions": "份提交",
        "generated": "由 handshake-lab 评分",
        "stop": "。",
        "class.ok": "通过",
        "class.wrong-predictions": "预测有误",
        "class.kernel-disagreed": "内核不一致",
        "class.truncated": "不完整",
        "class.inconsistent": "自相矛盾（被修改？）",
        "class.unreadable": "无法读取",
        "lab": "实验",
        "pass_rates": "每一步的通过率",
        "pass_rates_note": (
            "内核与预期一致、且该步所有预测都正确，这一步才算通过；只统计运行到该步的记录"
            "（自相矛盾和无法读取的记录不计）。"
        ),
        "step": "步骤",
        "passed": "通过",
        "runs": "记录数",
        "rate": "通过率",
        "wrong": "最常见的错误预测",
        "wrong_none": "没有错误的预测。",
        "count": "学生数",
        "question": "问题",
        "answered": "回答",
        "truth": "内核的回答",
        "explanation": "需要读的解释",
        "students": "学生",
        "student": "学生",
        "class": "类别",
        "reason": "原因",
        "score": "得分",
        "kernel": "内核",
        "topology": "拓扑",
        "steps": "步骤",
        "no_answer": "（未回答）",
        "differs": "每次运行不同",
        "same_run_as": "与以下学生的记录是同一次运行：",
        "limits": (
            "记录自洽并不证明它来自真实的运行：只证明文件完整且前后一致，"
            "不能证明它是内核产生的（见 docs/grading.md）。"
        ),
    },
}


def grade_label(key: str, lang: str) -> str:
    """The word for ``key`` in ``lang`` (English where a language lacks it)."""
    table = GRADE_LABELS.get(pick(lang), GRADE_LABELS[DEFAULT_LANG])
    return table.get(key, GRADE_LABELS[DEFAULT_LANG][key])
