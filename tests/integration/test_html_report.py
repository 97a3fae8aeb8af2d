"""The HTML report of a real half-close run, opened in a real headless Chromium.

One run per language for the whole module (``run half-close --html --save``), one browser:
each test asserts what a user of the page sees, counted against the run record the page was
drawn from (the saved run of the same process).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.record.codec import read_run
from handshake_lab.record.run import RunRecord
from handshake_lab.spec.loader import find_lab
from handshake_lab.tcp.machine import TRANSITIONS
from tests.browser import chromium, console_errors, file_url
from tests.integration.test_cli import cli, one_error_line


@dataclass(frozen=True)
class Report:
    html: Path
    saved: Path
    record: RunRecord


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """``run half-close --html --save`` once in each language."""
    out: dict[str, Report] = {}
    for lang in ("en", "zh"):
        where = tmp_path_factory.mktemp(f"html-{lang}")
        html, saved = where / "run.html", where / "run.jsonl"
        proc = cli("run", "half-close", "--lang", lang, "--html", str(html), "--save", str(saved))
        assert proc.returncode == 0, proc.stderr
        out[lang] = Report(html, saved, read_run(saved))
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def page(browser: Any, reports: dict[str, Report]) -> Iterator[Any]:
    """The English report, freshly loaded from disk, the browser log emptied before."""
    browser.get_log("browser")
    browser.get(file_url(reports["en"].html))
    yield browser
    assert console_errors(browser) == []


def test_report_of_the_saved_run_is_the_same_page_byte_for_byte(
    reports: dict[str, Report],
) -> None:
    for lang, rep in reports.items():
        again = rep.html.with_name("again.html")
        proc = cli("report", str(rep.saved), "-o", str(again), "--lang", lang)
        assert proc.returncode == 0, proc.stderr
        assert again.read_bytes() == rep.html.read_bytes()


def test_the_page_is_one_file_that_names_no_address_to_fetch(reports: dict[str, Report]) -> None:
    for rep in reports.values():
        text = rep.html.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text)
        assert not re.search(r"<(script|img|iframe)[^>]*\bsrc=", text)
        assert "@import" not in text
        assert "url(http" not in text
        assert rep.html.stat().st_size < 300_000


def test_every_captured_segment_is_one_arrow(page: Any, reports: dict[str, Report]) -> None:
    record = reports["en"].record
    segments = record.segments()
    arrows = page.find_elements("css selector", "svg.ladder g.seg")
    assert len(arrows) == len(segments)
    assert sorted(int(a.get_attribute("data-seg-index")) for a in arrows) == list(
        range(len(segments))
    )
    dropped = page.find_elements("css selector", "svg.ladder g.seg.dropped")
    assert len(dropped) == sum(1 for s in segments if s.get("dropped"))
    for arrow in arrows:
        seg = segments[int(arrow.get_attribute("data-seg-index"))]
        assert arrow.get_attribute("data-sender") == seg["sender"]
        assert seg["label"] in arrow.text
    if not segments:  # no capture (not root): the page says so instead of an empty drawing
        assert page.find_element("css selector", "#ladder .empty").is_displayed()
    else:
        assert page.find_element("css selector", "svg.ladder").is_displayed()


def test_the_highlighted_path_is_the_records_transitions(
    page: Any, reports: dict[str, Report]
) -> None:
    record = reports["en"].record
    want = Counter(
        (str(t["side"]), str(t["old"]), str(t["new"]))
        for t in record.transitions()
        if t["old"] != t["new"]
    )
    drawn = page.find_elements("css selector", "svg.machine path.taken")
    listed = page.find_elements("css selector", "#diagram ul.offtable li")
    got = Counter(
        (e.get_attribute("data-side"), e.get_attribute("data-from"), e.get_attribute("data-to"))
        for e in [*drawn, *listed]
    )
    assert got == want
    # Every state the kernel reported is filled; the diagram's edges are the table's.
    seen = {
        e.get_attribute("data-state")
        for e in page.find_elements("css selector", "svg.machine g.node.seen")
    }
    reported = {obs.state for step in record.steps for obs in step.observed.values()}
    assert reported - {"ABSENT"} <= seen
    pairs = {
        (state.name, tr.next_state.name)
        for (state, _), tr in TRANSITIONS.items()
        if tr.next_state is not state and state.name != "NEW_SYN_RECV"
    }
    edges = page.find_elements("css selector", "svg.machine path.edge")
    assert len(edges) == len(pairs)


def test_the_step_control_moves_the_cursor_by_click_and_by_key(
    page: Any, reports: dict[str, Report]
) -> None:
    steps = len(reports["en"].record.steps)
    articles = page.find_elements("css selector", "article.step")
    assert len(articles) == steps

    def cursor() -> int:
        current = page.find_elements("css selector", "article.step.current")
        assert len(current) == 1
        label = page.find_element("id", "cursor-label").text
        assert label == f"Step {current[0].get_attribute('data-step')}/{steps}"
        return int(current[0].get_attribute("data-step"))

    assert cursor() == 1
    page.find_element("css selector", "button[data-go=next]").click()
    assert cursor() == 2
    body = page.find_element("tag name", "body")
    body.send_keys("\ue014")  # ArrowRight
    assert cursor() == 3
    body.send_keys("\ue010")  # End
    assert cursor() == steps
    body.send_keys("\ue012")  # ArrowLeft
    assert cursor() == steps - 1
    page.find_element("css selector", "button[data-go=first]").click()
    assert cursor() == 1
    # The ladder and the diagram follow the cursor: the step's arrows are current, later
    # ones faded.
    captured = [s for s in reports["en"].record.steps if s.segments]
    if not captured:  # no capture (loopback without root): no arrows to follow the cursor
        assert page.find_element("css selector", "#ladder .empty").is_displayed()
        return
    connect = captured[0]
    for _ in range(connect.index - 1):
        body.send_keys("\ue014")
    assert cursor() == connect.index
    for arrow in page.find_elements("css selector", "g.seg"):
        step = int(arrow.get_attribute("data-step"))
        classes = arrow.get_attribute("class").split()
        assert ("current" in classes) == (step == connect.index)
        assert ("future" in classes) == (step > connect.index)
    here = page.find_elements("css selector", "svg.machine g.here.current")
    assert [h.get_attribute("data-step") for h in here] == [str(connect.index)]


def test_the_chinese_page_shows_the_chinese_texts(
    browser: Any, reports: dict[str, Report]
) -> None:
    browser.get_log("browser")
    browser.get(file_url(reports["zh"].html))
    assert browser.find_element("tag name", "html").get_attribute("lang") == "zh-Hans"
    first = browser.find_element("id", "step-1").text
    assert "原因" in first
    want = find_lab("half-close").steps[0].explain.zh.split("\n")[0].strip()[:12]
    assert want in first
    assert browser.find_element("id", "cursor-label").text.startswith("步骤 1/")
    assert console_errors(browser) == []


def test_the_page_loads_with_the_network_off(browser: Any, reports: dict[str, Report]) -> None:
    browser.set_network_conditions(
        offline=True, latency=0, download_throughput=0, upload_throughput=0
    )
    try:
        browser.get_log("browser")
        browser.get(file_url(reports["en"].html))
        assert browser.find_element("css selector", "svg.machine").is_displayed()
        assert len(browser.find_elements("css selector", "article.step")) == len(
            reports["en"].record.steps
        )
        fetched = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert fetched == []
        assert console_errors(browser) == []
    finally:
        browser.delete_network_conditions()


def test_an_html_path_that_cannot_be_written_is_refused_before_step_1(tmp_path: Path) -> None:
    proc = cli("run", "half-close", "--html", str(tmp_path / "missing" / "r.html"))
    assert proc.returncode == 9
    assert "does not exist" in one_error_line(proc)
    assert proc.stdout == ""  # refused before the lab printed anything


def test_report_of_a_file_that_is_not_a_run_exits_10(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text("not json\n", encoding="utf-8")
    proc = cli("report", str(bogus), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 10
    assert "bogus.jsonl:1" in one_error_line(proc)
    assert not (tmp_path / "r.html").exists()


def test_a_disagreement_is_drawn_in_its_own_colour(tmp_path: Path, browser: Any) -> None:
    text = find_lab("half-close").path.read_text(encoding="utf-8")
    wrong = text.replace(
        'expect = { client = "FIN_WAIT2", server = "CLOSE_WAIT" }',
        'expect = { client = "CLOSING", server = "CLOSE_WAIT" }',
        1,
    )
    assert wrong != text
    # The course view lists the states a lab's steps expect: a copy that expects CLOSING says so.
    wrong = re.sub(r"(?m)^(states = \[.*)\]$", r'\1, "CLOSING"]', wrong, count=1)
    lab_file, html, saved = tmp_path / "wrong.toml", tmp_path / "r.html", tmp_path / "r.jsonl"
    lab_file.write_text(wrong, encoding="utf-8")
    proc = cli("run", str(lab_file), "--html", str(html), "--save", str(saved))
    assert proc.returncode == 3, proc.stderr
    record = read_run(saved)
    bad = [s for s in record.steps if not s.agrees]
    assert [s.expected.get("client") for s in bad] == ["CLOSING"]
    browser.get_log("browser")
    browser.get(file_url(html) + f"#step-{bad[0].index}")
    assert browser.find_element("css selector", ".verdict").get_attribute("data-verdict") == "fail"
    assert "disagree" in browser.find_element("id", f"step-{bad[0].index}").get_attribute("class")
    node = browser.find_element("css selector", "svg.machine g.node.disagree")
    assert node.get_attribute("data-state") == "CLOSING"
    here = browser.find_element("css selector", "svg.machine g.here.current")
    assert here.get_attribute("data-step") == str(bad[0].index)
    assert len(here.find_elements("css selector", "g.marker.expected")) == 1

    def stroke(css: str) -> str:
        return str(
            browser.execute_script(
                "return getComputedStyle(document.querySelector(arguments[0])).stroke", css
            )
        )

    assert stroke("g.node.disagree rect") not in {
        stroke("g.node.seen rect"),
        stroke("g.node rect"),
    }
    assert console_errors(browser) == []


OVERLAPS_JS = """
const out = [];
for (const svg of document.querySelectorAll('svg.ladder')) {
  const boxes = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim())
    .map(t => { const b = t.getBBox(); return [t.textContent, b.x, b.y, b.width, b.height]; });
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [ta, ax, ay, aw, ah] = boxes[i], [tb, bx, by, bw, bh] = boxes[j];
    const ox = Math.min(ax + aw, bx + bw) - Math.max(ax, bx);
    const oy = Math.min(ay + ah, by + bh) - Math.max(ay, by);
    if (ox > 1 && oy > 1) out.push([ta, tb]);
  }
}
return out;"""


@pytest.mark.parametrize("name", ["simultaneous-close", "time-wait-syn"])
def test_no_two_ladder_labels_overlap_with_many_dropped_resends(
    tmp_path: Path, browser: Any, name: str
) -> None:
    """Saved real netns runs. simultaneous-close: both FINs and their resends dropped in turn;
    each dropped arrow's note sits below it, and the next arrow's label must not land on it.
    time-wait-syn: a SYN ends TIME_WAIT and the ACK creates the new socket in the same instant
    on the same 4-tuple; the state that lasted no time gets no label over the next one's."""
    saved = Path(__file__).parents[1] / "unit" / "data" / "runs" / f"{name}.netns.jsonl"
    if name == "simultaneous-close":
        assert sum(1 for s in read_run(saved).segments() if s.get("dropped")) >= 6
    else:
        moves = [(t["old"], t["new"], t["cause"]) for t in read_run(saved).transitions()]
        assert ("TIME_WAIT", "ABSENT", "SYN") in moves
    html = tmp_path / "sc.html"
    for lang in ("en", "zh"):
        proc = cli("report", str(saved), "-o", str(html), "--lang", lang)
        assert proc.returncode == 0, proc.stderr
        browser.get(file_url(html))
        assert browser.find_elements("css selector", "svg.ladder text")
        assert browser.execute_script(OVERLAPS_JS) == [], lang
