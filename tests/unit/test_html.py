"""The HTML report as text (no browser): what it is drawn from, and what it must never hold.

The browser tests (tests/integration/test_html_report.py) look at real runs' pages; these
check the renderer's own rules on small records made by hand.
"""

from __future__ import annotations

import dataclasses
import re

from handshake_lab.record.codec import dumps, read_events
from handshake_lab.record.run import RunRecord
from handshake_lab.render.html import render_html
from tests.unit.test_record import record, seg, started, step


def test_the_page_is_the_same_for_a_live_record_and_its_saved_lines() -> None:
    live = record()
    for lang in ("en", "zh"):
        saved = read_events([dumps(event, lang) for event in live.events()])
        assert render_html(saved, lang) == render_html(live, lang)


def test_one_arrow_per_segment_and_every_step_once() -> None:
    page = render_html(record(), "en")
    assert page.count('<g class="seg') == 4
    assert sorted(map(int, re.findall(r'data-seg-index="(\d+)"', page))) == [0, 1, 2, 3]
    assert page.count('<article class="step') == 2


def test_texts_from_a_lab_file_are_escaped() -> None:
    rec = record()
    hostile = dataclasses.replace(
        rec.started, title={"en": "<script>alert(1)</script>"}, intro={"en": "a & b"}
    )
    page = render_html(RunRecord(hostile, rec.steps, rec.result), "en")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b" in page


def test_the_page_names_no_address_and_nothing_outside_the_record() -> None:
    page = render_html(record(), "en")
    assert not re.search(r"https?://", page)
    assert "/x/demo.toml" not in page  # the lab's path on the machine that ran it


def test_a_resent_syn_is_marked_and_a_dropped_segment_stops_with_its_hold() -> None:
    syn, again = seg(0.0, "client", "SYN"), seg(1000.0, "client", "SYN")
    lost = seg(0.5, "server", "SYN,ACK") | {"dropped": True, "hold": "synack"}
    first = dataclasses.replace(
        step(1, [syn, lost, again], []),
        holds={"synack": {"kind": "drop_synack", "at": "server", "dropped": 1, "active": True}},
    )
    rec = RunRecord(started(), (first,), None)
    assert rec.retransmissions() == frozenset({2})
    page = render_html(rec, "en")
    assert page.count('<g class="seg retrans"') == 1
    assert page.count('<g class="seg dropped"') == 1
    assert "dropped: synack (nft 1)" in page
    assert 'data-verdict="interrupted"' in page  # no result: the run was cut short


def test_a_forged_segment_is_drawn_and_labelled_as_forged_in_both_languages() -> None:
    forged = seg(0.0, "client", "RST") | {"forged": True}
    answer = seg(0.1, "server", "ACK")
    rec = RunRecord(started(), (step(1, [forged, answer], []),), None)
    page = render_html(rec, "en")
    assert page.count('<g class="seg forged"') == 1
    assert "RST  (forged by the lab)" in page
    assert "由实验伪造" in render_html(rec, "zh")


def test_the_chinese_page_uses_the_chinese_texts() -> None:
    page = render_html(record(), "zh")
    assert '<html lang="zh-Hans">' in page
    assert "原因 1" in page
    assert "why 1" not in page


def test_a_syn_ack_of_a_socket_connected_to_itself_is_not_a_resent_syn() -> None:
    syn = seg(0.0, "client", "SYN", dst="127.0.0.1:40000")
    syn_ack = seg(0.1, "client", "SYN,ACK", dst="127.0.0.1:40000")  # same socket, same seq
    rec = RunRecord(started(), (step(1, [syn, syn_ack], []),), None)
    assert rec.retransmissions() == frozenset()
    assert "the same socket receives" in render_html(rec, "en")
