"""The course view: every built-in lab says where it sits, and what it says cannot drift from
its steps (states), its topologies (duration, privileges) or its exercise sheet (links)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handshake_lab.errors import LabInvalidError
from handshake_lab.i18n.machine import display_width
from handshake_lab.render.course import course_document, course_lines, course_order, sheet_nav
from handshake_lab.spec.loader import load_lab, parse_lab, shown_states
from handshake_lab.spec.model import LEVELS, PRIVILEGES, Lab

LAB_DIR = Path(__file__).resolve().parents[2] / "labs"
LABS = [load_lab(path) for path in sorted(LAB_DIR.glob("*.toml"))]
ORDERED = course_order(LABS)


def test_every_builtin_lab_declares_its_place_in_the_course() -> None:
    missing = [lab.name for lab in LABS if lab.course is None]
    assert missing == []


def test_course_order_is_one_to_n_and_levels_never_go_back() -> None:
    orders = [lab.course.order for lab in ORDERED if lab.course]
    assert orders == list(range(1, len(LABS) + 1))
    levels = [lab.course.level for lab in ORDERED if lab.course]
    assert levels == sorted(levels)
    assert set(levels) == set(LEVELS), "every level has at least one lab"


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.name)
def test_declared_states_are_the_states_the_steps_expect(lab: Lab) -> None:
    """Derived here from the steps' expect tables, independently of the loader's own check."""
    assert lab.course is not None
    derived: list[str] = []
    for step in lab.steps:
        for state in step.expect.values():
            if state is not None and state.name not in derived:
                derived.append(state.name)
    assert [s.name for s in lab.course.states] == derived
    assert tuple(lab.course.states) == shown_states(lab.steps)


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.name)
def test_duration_and_privileges_match_the_topologies(lab: Lab) -> None:
    assert lab.course is not None
    assert list(lab.course.duration) == list(lab.topologies)
    assert lab.course.privileges in PRIVILEGES
    if "loopback" not in lab.topologies:
        assert lab.course.privileges != "none"


HEAD = """
title = {en = "Tiny", zh = "小"}
summary = {en = "a tiny lab", zh = "一个小实验"}
"""
STEPS = """
[[step]]
actor = "server"
action = "listen"
expect = {listener = "LISTEN"}
explain = {en = "We listen."}

[[step]]
actor = "client"
action = "connect"
expect = {client = "ESTABLISHED", server = "ESTABLISHED"}
explain = {en = "We connect."}
"""
COURSE = """
[course]
level = 1
order = 1
duration = { loopback = 1, netns = 1 }
privileges = "none"
states = ["LISTEN", "ESTABLISHED"]
"""


def test_a_user_lab_may_leave_the_course_out() -> None:
    assert parse_lab((HEAD + STEPS).encode(), "mine.toml").course is None


def test_a_user_lab_with_a_course_is_checked_like_a_builtin() -> None:
    lab = parse_lab((HEAD + COURSE + STEPS).encode(), "mine.toml")
    assert lab.course is not None
    assert lab.course.duration == {"loopback": 1, "netns": 1}


@pytest.mark.parametrize(
    ("change", "words", "line"),
    [
        (('"LISTEN", "ESTABLISHED"', '"LISTEN"'), "the steps expect ESTABLISHED", 10),
        (('"LISTEN", "ESTABLISHED"', '"LISTEN", "ESTABLISHED", "CLOSING"'), "no step expects", 10),
        (("level = 1", "level = 9"), "course.level", 6),
        (("loopback = 1, netns = 1", "loopback = 1"), "exactly the lab's topologies", 8),
        (('privileges = "none"', 'privileges = "sudo"'), "must be one of none, userns", 9),
        (("order = 1", "order = 1\ncolour = 2"), "unknown course key 'colour'", 8),
    ],
)
def test_a_wrong_course_is_an_error_on_its_line(
    change: tuple[str, str], words: str, line: int
) -> None:
    text = HEAD + COURSE.replace(*change) + STEPS
    with pytest.raises(LabInvalidError) as info:
        parse_lab(text.encode(), "mine.toml")
    assert words in str(info.value)
    assert info.value.line == line, str(info.value)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_course_view_fits_80_columns_and_lists_every_lab_in_order(lang: str) -> None:
    lines = course_lines(LABS, lang)
    assert all(display_width(line) <= 80 for line in lines), lines
    named = [line.split()[1] for line in lines if re.match(r"^ ?\d+ ", line)]
    assert named == [lab.name for lab in ORDERED]
    headings = [line for line in lines if line and not line.startswith(" ") and line[0] != "1"]
    assert len([h for h in headings if any(LEVELS[n].get(lang) in h for n in LEVELS)]) == 3


def test_the_course_document_gives_scripts_every_field() -> None:
    doc = course_document(LABS, "en")
    assert [lab["name"] for lab in doc["labs"]] == [lab.name for lab in ORDERED]
    handshake = next(lab for lab in doc["labs"] if lab["name"] == "handshake")
    assert handshake["netns_only_states"] == ["SYN_RECV"]
    assert set(handshake["duration"]) == {"loopback", "netns"}
    assert handshake["privileges"] == "none"


LINK = re.compile(r"\[([a-z0-9-]+)\]\(\1\.md\)")


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.name)
def test_each_exercise_sheet_links_the_previous_and_next_lab_in_course_order(lab: Lab) -> None:
    text = (LAB_DIR / f"{lab.name}.md").read_text(encoding="utf-8")
    english, chinese = text.split("\n---\n", 1)
    assert sheet_nav(lab, LABS, "en") in english
    assert sheet_nav(lab, LABS, "zh") in chinese
    i = ORDERED.index(lab)
    want = [x.name for x in ORDERED[max(0, i - 1) : i + 2] if x is not lab]
    for part, prev_word, next_word in (
        (english, "Previous:", "Next:"),
        (chinese, "上一个：", "下一个："),
    ):
        nav = [line for line in part.splitlines() if prev_word in line or next_word in line]
        assert len(nav) == 1, nav
        assert LINK.findall(nav[0]) == want
        for name in want:
            assert (LAB_DIR / f"{name}.md").is_file()
