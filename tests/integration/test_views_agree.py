"""Kernel truth in every view: at every step of every built-in lab, the state each socket has
in the transition list and in the ladder is the state ss and psutil reported at that step.

Runs each lab as a user does (``run LAB --json``), reads the record back, and compares, for
each side the step observed: the last transition of that socket at or before the step's table
read (``observed_ms``), and the last state the ladder draws for that end by then. CLOSE and
ABSENT are the same to a view (a socket that is gone). Root: the transition stream (tracefs)
needs real root; CI runs as root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from handshake_lab.lab.grading import Submission, grade_submission
from handshake_lab.record.codec import read_run
from handshake_lab.record.run import RunRecord
from handshake_lab.spec.loader import builtin_names, find_lab
from handshake_lab.tcp.states import TcpState
from tests.integration.test_cli import cli

pytestmark = pytest.mark.root
GONE = {"CLOSE", "ABSENT"}
SENTENCE = re.compile(r"[.;:。；：]\s*")
NEGATION = re.compile(
    r"\b(no|not|never|without|nobody|avoid|skips?|instead|otherwise|would|unless)\b"
    r"|没有|不|跳过|躲避|而不是|否则",
    re.IGNORECASE,
)
STATE_NAME = re.compile(
    r"\b(" + "|".join(sorted((s.name for s in TcpState), key=len, reverse=True)) + r")\b"
)


def same(a: str, b: str) -> bool:
    return a == b or (a in GONE and b in GONE)


def disagreements(record: RunRecord) -> list[str]:
    problems: list[str] = []
    transitions: list[dict[str, object]] = []
    convs = record.conversations()
    for step in record.steps:
        transitions += step.transitions
        when = step.observed_ms
        assert when is not None
        for side, obs in step.observed.items():
            if obs.local is None:
                continue
            key = (obs.local, obs.remote)
            moves = [
                t
                for t in transitions
                if (t["local"], t["remote"]) == key and float(str(t["t_ms"])) <= when
            ]
            if moves and not same(str(moves[-1]["new"]), obs.state):
                problems.append(
                    f"step {step.id}: {side} transitions say {moves[-1]['new']}, "
                    f"ss/psutil {obs.state}"
                )
            # The conversation of that 4-tuple under way by then (a 4-tuple can be reused).
            ends = [
                (
                    conv,
                    {(conv.client, conv.server): "client", (conv.server, conv.client): "server"},
                )
                for conv in convs
                if conv.start_ms <= when
            ]
            mine = [
                (c, e[(obs.local, obs.remote or "")])
                for c, e in ends
                if (obs.local, obs.remote or "") in e
            ]
            for conv, end in mine[-1:]:
                where = "client" if conv.self_connected else end
                drawn = [s for t, e, s in conv.states if e == where and t <= when]
                if drawn and not same(drawn[-1], obs.state):
                    problems.append(
                        f"step {step.id}: {side} ladder says {drawn[-1]}, ss/psutil {obs.state}"
                    )
    return problems


CASES = [
    pytest.param(name, topology, loop, id=f"{name}-{topology}-{loop}")
    for name in builtin_names()
    for topology, loop in (("loopback", "asyncio"), ("netns", "uvloop"))
    if topology in find_lab(name).topologies
]


@pytest.mark.skipif(os.geteuid() != 0, reason="the transition stream needs real root (tracefs)")
@pytest.mark.parametrize(("name", "topology", "loop"), CASES)
def test_the_ladder_and_the_transitions_agree_with_ss_and_psutil_at_every_step(
    tmp_path: Path, name: str, topology: str, loop: str
) -> None:
    saved = tmp_path / "run.jsonl"
    proc = cli(
        "run",
        name,
        "--topology",
        topology,
        "--loop",
        loop,
        "--json",
        "--save",
        str(saved),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    record = read_run(saved)
    assert any(step.transitions for step in record.steps), "no transition stream: not root?"
    assert disagreements(record) == []
    # The grader finds a real run, capture and transitions and all, consistent.
    graded = grade_submission(Submission("student", saved))
    assert (graded.klass, graded.problems) == ("ok", ()), graded.reason
    # Every state a text of this run names is one the record contains: texts hold on this run.
    lab = find_lab(name)
    named = {
        (step.id, word)
        for step in lab.steps_for("netns" if topology == "netns" else "loopback")
        for text in (step.explain.en, step.explain.zh)
        for sentence in SENTENCE.split(text)
        if not NEGATION.search(sentence)  # "no TIME_WAIT", "没有 TIME_WAIT": named as absent
        for word in STATE_NAME.findall(sentence)
    }
    seen = {obs.state for step in record.steps for obs in step.observed.values()}
    seen |= {str(t[k]) for step in record.steps for t in step.transitions for k in ("old", "new")}
    assert sorted((sid, w) for sid, w in named if w not in seen) == []
