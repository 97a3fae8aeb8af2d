"""The HTML report of a run whose segments a hold dropped (lost-last-ack, in namespaces).

Root: the lab holds FIN_WAIT1 and LAST_ACK still by dropping ACKs with nftables in its own
namespaces, so its ladder has arrows that stop and FINs that were sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from handshake_lab.record.codec import read_run
from handshake_lab.record.run import RunRecord
from tests.browser import chromium, console_errors, file_url
from tests.integration.test_cli import cli

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunRecord, Any]]:
    where = tmp_path_factory.mktemp("held-html")
    html, saved = where / "r.html", where / "r.jsonl"
    proc = cli("run", "lost-last-ack", "--html", str(html), "--save", str(saved), timeout=120)
    assert proc.returncode == 0, proc.stderr
    with chromium() as driver:
        driver.get(file_url(html))
        yield read_run(saved), driver
        assert console_errors(driver) == []


def test_each_dropped_segment_is_an_arrow_that_stops_with_its_hold(
    held: tuple[RunRecord, Any],
) -> None:
    record, page = held
    segments = record.segments()
    dropped = [i for i, s in enumerate(segments) if s.get("dropped")]
    assert dropped  # the lab's lesson: ACKs were dropped
    arrows = page.find_elements("css selector", "svg.ladder g.seg.dropped")
    assert sorted(int(a.get_attribute("data-seg-index")) for a in arrows) == dropped
    holds_then = [step.holds for step in record.steps for _ in step.segments]
    for arrow in arrows:
        index = int(arrow.get_attribute("data-seg-index"))
        hold = segments[index]["hold"]
        note = arrow.find_element("css selector", "text.drop-note").text
        assert hold in note
        assert f"nft {holds_then[index][hold]['dropped']}" in note  # the counter at that step
        assert not arrow.find_elements("css selector", "path.head")  # it never arrived
    assert len(page.find_elements("css selector", "svg.ladder g.seg")) == len(segments)


def test_resent_segments_are_marked(held: tuple[RunRecord, Any]) -> None:
    record, page = held
    resent = sorted(record.retransmissions())
    assert resent  # the client's FIN, resent while its ACK was dropped
    arrows = page.find_elements("css selector", "svg.ladder g.seg.retrans")
    assert sorted(int(a.get_attribute("data-seg-index")) for a in arrows) == resent
    for index in resent:
        assert "FIN" in record.segments()[index]["flags"]


def test_the_hold_counters_are_shown_in_the_steps(held: tuple[RunRecord, Any]) -> None:
    record, page = held
    last = record.steps[-1]
    article = page.find_element("id", f"step-{last.index}")
    for hold_id, hold in last.holds.items():
        line = article.find_element("css selector", f'li.hold[data-hold="{hold_id}"]').text
        assert f"{hold['dropped']} dropped" in line
