"""``sweep``'s reading of a run record (record/sweep.py) and its outputs (render/sweep.py).

``data/runs/handshake.netns.delay-0ms.jsonl`` is a real root run of the built-in handshake lab
in namespaces, saved by ``sweep handshake --delay 0 --save-dir``: capture on the client's veth,
the transition stream, tcp_info at every step. No sockets here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.cells import cell_len

from handshake_lab.record.codec import read_run
from handshake_lab.record.run import RunRecord
from handshake_lab.record.sweep import SweepPoint, sweep_point
from handshake_lab.render.sweep import (
    CSV_FIELDS,
    JSON_FORMAT,
    sweep_csv,
    sweep_html,
    sweep_json,
    sweep_table,
)

DATA = Path(__file__).parent / "data" / "runs"
RUN = DATA / "handshake.netns.delay-0ms.jsonl"
VM_RUNS = {d: DATA / f"handshake.vm-netem.delay-{d}ms.jsonl" for d in (0, 50, 200)}
USERNS_RUN = DATA / "handshake.userns.delay-0ms.jsonl"
"""A real run as a normal user (Debian's uid 1000): namespaces in a user namespace, the capture
on, no transition stream (tracefs needs real root); every transition is a table read."""
"""Real runs with tc netem: ``make vm-check``'s sweep in the client VM (Debian 12 kernel, qemu
without KVM, so even +0 ms takes milliseconds), copied from ``$VMR_DIR/vm-check/sweep-runs``."""


@pytest.fixture(scope="module")
def record() -> RunRecord:
    return read_run(RUN)


@pytest.fixture(scope="module")
def point(record: RunRecord) -> SweepPoint:
    return sweep_point(record)


def test_the_run_says_what_wire_it_had(record: RunRecord, point: SweepPoint) -> None:
    assert record.started.link == {"rtt_ms": 0.0, "loss_pct": 0.0}
    assert (point.lab, point.topology, point.rtt_ms, point.passed) == (
        "handshake",
        "netns",
        0.0,
        True,
    )


def test_each_stay_runs_from_one_recorded_transition_to_the_next(
    record: RunRecord, point: SweepPoint
) -> None:
    moves = [t for t in record.transitions() if t["side"] == "client" and t["old"] != t["new"]]
    assert [m["new"] for m in moves] == ["SYN_SENT", "ESTABLISHED"]
    span = point.span("client", "SYN_SENT")
    assert span is not None
    assert (span.entered_ms, span.left_ms) == (moves[0]["t_ms"], moves[1]["t_ms"])
    assert span.duration_ms == pytest.approx(moves[1]["t_ms"] - moves[0]["t_ms"])
    assert span.next_state == "ESTABLISHED"
    assert span.cause == "SYN,ACK"
    assert (span.duration_ms or 0) > 900, "held by the full accept queue until the SYN was resent"


def test_the_answer_runs_from_the_answered_syn_not_from_the_first(
    record: RunRecord, point: SweepPoint
) -> None:
    span = point.span("client", "SYN_SENT")
    assert span is not None
    assert span.left_ms is not None
    local = next(t["local"] for t in record.transitions() if t["side"] == "client")
    syns = [s["t_ms"] for s in record.segments() if s["src"] == local and s["flags"] == "SYN"]
    assert len(syns) >= 2, "the first SYN was dropped and resent"
    assert span.answer_ms == pytest.approx(span.left_ms - syns[-1], abs=1e-3)
    assert span.answer_ms is not None
    assert span.duration_ms is not None
    assert span.answer_ms < 5 < span.duration_ms


def test_server_stays_get_no_answer_time_in_namespaces(point: SweepPoint) -> None:
    """The capture is on the client's veth: a server segment is seen when it arrives."""
    servers = [s for s in point.spans if s.side.startswith("server")]
    assert servers
    assert all(s.answer_ms is None for s in servers)
    assert any(s.answer_ms is not None for s in point.spans if s.side == "filler")


def test_the_kernels_first_rtt_sample_is_kept_per_side(
    record: RunRecord, point: SweepPoint
) -> None:
    first = next(
        s.tcp_info["client"] for s in record.steps if s.tcp_info.get("client", {}).get("rtt_ms")
    )
    assert point.measured["client"] == first
    syn_sent = next(s for s in record.steps if s.id == "syn-dropped")
    assert syn_sent.tcp_info["client"]["rtt_ms"] == 0.0, "no sample yet in SYN_SENT"
    assert syn_sent.tcp_info["client"]["rto_ms"] == 1000.0


@pytest.mark.parametrize("delay", [50, 200])
def test_with_netem_every_clients_answer_is_the_rtt_set_and_the_kernel_agrees(
    delay: int,
) -> None:
    point = sweep_point(read_run(VM_RUNS[delay]))
    assert point.rtt_ms == delay
    assert point.passed
    clients = {s.side: s for s in point.spans if s.state == "SYN_SENT"}
    assert set(clients) == {"filler", "client", "held", "lazy"}
    for side in ("filler", "client", "lazy"):
        answer = clients[side].answer_ms
        assert answer is not None
        assert delay <= answer < delay * 1.2 + 10, clients[side]
    # The held client's SYN-ACK was dropped, then resent on the server's timer: no answer time.
    assert clients["held"].answer_ms is None
    span = point.span("client", "SYN_SENT")
    assert span is not None
    assert span.answer_ms is not None
    srtt = point.measured["client"]["rtt_ms"]
    assert abs(span.answer_ms - srtt) <= max(2.0, 0.1 * srtt)


def test_with_netem_the_answer_grows_with_the_delay_and_the_hold_does_not_follow_it() -> None:
    spans = [sweep_point(read_run(VM_RUNS[d])).span("client", "SYN_SENT") for d in (0, 50, 200)]
    answers = [s.answer_ms for s in spans if s is not None and s.answer_ms is not None]
    assert len(answers) == 3
    assert answers == sorted(answers)
    holds = [s.duration_ms - s.answer_ms for s in spans if s and s.duration_ms and s.answer_ms]
    # The retransmission that got through (1 s, or 3 s when the slow VM accepted late).
    assert all(min(abs(h - 1000), abs(h - 3000)) < 100 for h in holds), holds


def delayed(point: SweepPoint, rtt: float) -> SweepPoint:
    """The same run as if the RTT added were ``rtt``: every answered stay one RTT longer."""
    spans = tuple(
        dataclasses.replace(
            s,
            left_ms=None if s.left_ms is None else s.left_ms + rtt,
            answer_ms=None if s.answer_ms is None else s.answer_ms + rtt,
        )
        for s in point.spans
    )
    return dataclasses.replace(point, rtt_ms=rtt, spans=spans)


def test_the_json_has_one_run_per_delay_with_every_stay(point: SweepPoint) -> None:
    points = [point, delayed(point, 50.0)]
    doc = json.loads(json.dumps(sweep_json(points)))
    assert doc["format"] == JSON_FORMAT
    assert [r["delay_ms"] for r in doc["runs"]] == [0.0, 50.0]
    states = doc["runs"][1]["states"]
    client = next(s for s in states if s["side"] == "client" and s["state"] == "SYN_SENT")
    span = point.span("client", "SYN_SENT")
    assert span is not None
    assert span.answer_ms is not None
    assert client["answer_ms"] == pytest.approx(span.answer_ms + 50)
    assert set(client) == {
        "side",
        "state",
        "entered_ms",
        "left_ms",
        "duration_ms",
        "next",
        "cause",
        "answer_ms",
    }
    assert doc["runs"][0]["measured"] == point.measured


def test_the_csv_has_a_row_per_delay_and_stay_with_the_kernels_figures(
    point: SweepPoint,
) -> None:
    rows = list(csv.DictReader(io.StringIO(sweep_csv([point, delayed(point, 200.0)]))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == 2 * len(point.spans)
    row = next(
        r
        for r in rows
        if r["delay_ms"] == "200.0" and (r["side"], r["state"]) == ("client", "SYN_SENT")
    )
    assert float(row["srtt_ms"]) == point.measured["client"]["rtt_ms"]
    assert row["next"] == "ESTABLISHED"
    listener = next(r for r in rows if r["state"] == "LISTEN")
    assert listener["left_ms"] == listener["duration_ms"] == "", "still listening at the end"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_table_shows_each_run_and_the_summary_by_delay(point: SweepPoint, lang: str) -> None:
    text = sweep_table([point, delayed(point, 50.0)], lang, width=80)
    assert all(line == line.rstrip() for line in text.splitlines())
    heading = "RTT added 50 ms" if lang == "en" else "附加 RTT 50 毫秒"
    assert heading in text
    summary = next(line for line in text.splitlines() if line.startswith("  client SYN_SENT"))
    span = point.span("client", "SYN_SENT")
    assert span is not None
    assert span.duration_ms is not None
    assert span.answer_ms is not None
    assert f"{span.duration_ms:.1f} ({span.answer_ms:.3f})" in summary
    assert f"({span.answer_ms + 50:.1f})" in summary


def test_the_page_plots_answer_and_duration_against_the_rtt(point: SweepPoint) -> None:
    page = sweep_html([point, delayed(point, 50.0), delayed(point, 200.0)], "en")
    assert page.count("<svg") == 2
    assert "<script" not in page
    assert "http" not in page.replace("http-equiv", ""), "no resource from the network"
    assert "client SYN_SENT" in page
    assert page.count('class="series"') >= 2
    # The client's first srtt (1 ms: a timestamp sample, Karn's rule) is far above its answer
    # (microseconds on this wire): drawn at the top edge with its value, not rescaling all.
    srtt = point.measured["client"]["rtt_ms"]
    assert srtt == 1.0
    assert f'class="offval" x="70.0" y="27">{srtt:g}</text>' in sweep_html([point], "en")
    assert 'class="offval"' not in page, "on a 0-250 ms scale 1 ms is in range: a dot"


def test_a_run_without_the_stream_says_so_and_claims_no_answer_time() -> None:
    untraced = sweep_point(read_run(USERNS_RUN))
    assert untraced.traced is False
    assert untraced.spans  # the table still saw every state
    assert all(s.answer_ms is None and s.cause is None for s in untraced.spans)
    assert sweep_json([untraced])["runs"][0]["traced"] is False
    for lang, words in (("en", "no transition stream"), ("zh", "没有状态转换流")):
        table = sweep_table([untraced], lang, width=80)
        assert words in table
        assert max(cell_len(line) for line in table.splitlines()) <= 80
        assert words in sweep_html([untraced], lang)


def test_a_traced_run_has_no_such_note(point: SweepPoint) -> None:
    assert point.traced is True
    assert sweep_json([point])["runs"][0]["traced"] is True
    assert "no transition stream" not in sweep_table([point], "en")
    assert "no transition stream" not in sweep_html([point], "en")


@pytest.mark.parametrize("width", [80, 200])
def test_the_summary_of_four_delays_fits_the_terminal(width: int) -> None:
    points = [sweep_point(read_run(VM_RUNS[d])) for d in (0, 50, 200)]
    points.append(dataclasses.replace(points[-1], rtt_ms=400.0))
    table = sweep_table(points, "en", width=width)
    assert max(cell_len(line) for line in table.splitlines()) <= width
    summary = table[table.index("Duration (answer after)") : table.index("Times in ms")]
    for head in ("0 ms", "50 ms", "200 ms", "400 ms"):
        assert head in summary
    # Every state row is there once per block: two blocks at 80 columns, one at 200.
    blocks = 2 if width == 80 else 1
    assert summary.count("client SYN_SENT") == blocks
