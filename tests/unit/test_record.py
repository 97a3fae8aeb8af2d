"""The run record: language-neutral events, NDJSON out and back, the ladder's view of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus, RunInvalidError
from handshake_lab.record.codec import TEXT_FIELDS, dumps, read_events, read_run, to_json
from handshake_lab.record.events import LabResult, LabStarted, SideObservation, StepReport
from handshake_lab.record.run import Recorder, RunRecord
from tests.unit.test_timeline import traced as transition

C, S = "127.0.0.1:40000", "127.0.0.1:8080"


def seg(
    t: float, sender: str, flags: str, conv: int = 0, src: str = C, dst: str = S
) -> dict[str, Any]:
    if sender == "server":
        src, dst = dst, src
    return {
        "t_ms": t,
        "from": sender,
        "to": "server" if sender == "client" else "client",
        "src": src,
        "dst": dst,
        "flags": flags,
        "seq": 1,
        "ack": 0,
        "rel_seq": 0,
        "rel_ack": None,
        "len": 0,
        "win": 65535,
        "label": flags,
        "conv": conv,
        "sender": sender,
    }


def started() -> LabStarted:
    return LabStarted(
        name="demo",
        title={"en": "A demo", "zh": "演示"},
        summary={"en": "summary", "zh": "摘要"},
        loop="asyncio",
        topology="loopback",
        host="127.0.0.1",
        ports={"main": 8080},
        observers=["ss", "psutil"],
        steps=2,
        versions={"kernel": "6.1"},
        intro={"en": "intro", "zh": "介绍"},
        path="/x/demo.toml",
    )


def step(
    index: int, segments: list[dict[str, Any]], transitions: list[dict[str, Any]]
) -> StepReport:
    return StepReport(
        index=index,
        id=f"s{index}",
        actor="client",
        action="connect",
        args={"port": "main"},
        expected={"client": "ESTABLISHED"},
        observed={
            "client": SideObservation(
                side="client",
                state="ESTABLISHED",
                local=C,
                remote=S,
                sources={"ss": "ESTAB", "psutil": "ESTABLISHED"},
                agree=True,
                timer=None,
                pid=42,
            )
        },
        outcome="ok",
        expected_outcome=None,
        data=None,
        expected_data=None,
        facts={},
        expected_facts={},
        agrees=True,
        mismatches=[],
        explain_key=f"demo.s{index}",
        explanation={"en": f"why {index}", "zh": f"原因 {index}"},
        action_ms=1.0,
        settle_ms=2.0,
        total_steps=2,
        segments=segments,
        transitions=transitions,
    )


def record(passed: bool = True) -> RunRecord:
    first = step(
        1,
        [seg(0.0, "client", "SYN"), seg(0.1, "server", "SYN,ACK"), seg(0.2, "client", "ACK")],
        [transition(0.15, C, S, "SYN_SENT", "ESTABLISHED")],
    )
    second = step(
        2, [seg(30.0, "client", "FIN,ACK")], [transition(29.9, C, S, "ESTABLISHED", "FIN_WAIT1")]
    )
    result = LabResult(
        name="demo",
        passed=passed,
        steps=2,
        agreed=2 if passed else 1,
        disagreed=0 if passed else 1,
        duration_s=0.1,
        settle_s=0.0,
        disagreed_steps=[] if passed else ["s2"],
    )
    return RunRecord(started(), (first, second), result)


def lines_of(rec: RunRecord, lang: str) -> list[str]:
    return [dumps(event, lang) for event in rec.events()]


def test_json_differs_between_languages_only_in_the_documented_text_fields() -> None:
    rec = record()
    en = [json.loads(line) for line in lines_of(rec, "en")]
    zh = [json.loads(line) for line in lines_of(rec, "zh")]
    assert en[0]["title"] == "A demo"
    assert zh[0]["title"] == "演示"
    for a, b in zip(en, zh, strict=True):
        for key in TEXT_FIELDS.get(a["event"], ()):
            a.pop(key, None)
            b.pop(key, None)
        assert json.dumps(a) == json.dumps(b)


def test_the_lab_event_keeps_its_documented_key_order() -> None:
    keys = list(to_json(started(), "en"))
    assert keys[:9] == [
        "schema",
        "event",
        "name",
        "title",
        "summary",
        "loop",
        "topology",
        "lang",
        "host",
    ]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_saved_run_reads_back_into_the_same_record_in_its_language(lang: str) -> None:
    rec = record()
    back = read_events(lines_of(rec, lang))
    assert back.lang == lang
    assert back.steps[0].explanation == {lang: rec.steps[0].explanation[lang]}
    assert lines_of(back, lang) == lines_of(rec, lang)


def test_a_record_made_live_reads_back_equal_once_texts_are_in_one_language() -> None:
    sink: list[object] = []
    recorder = Recorder(sink.append)
    for event in record().events():
        recorder(event)
    assert len(sink) == 4  # every event forwarded as it came
    live = recorder.record()
    assert read_events(lines_of(live, "en")).steps == tuple(
        read_events(lines_of(record(), "en")).steps
    )


def test_verdicts_map_to_the_run_commands_exit_codes() -> None:
    assert record().exit_status() is ExitStatus.OK
    assert record(passed=False).exit_status() is ExitStatus.KERNEL_DISAGREED
    interrupted = RunRecord(started(), record().steps, None)
    assert interrupted.exit_status() is ExitStatus.INTERRUPTED


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ls: ls[1:], "must start with a lab event"),
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], "step 2 where step 1 was due"),
        (lambda ls: [*ls, ls[1]], "an event after the result"),
        (lambda ls: [ls[0], "{not json", *ls[1:]], ":2:"),
        (lambda ls: [ls[0].replace('"schema": 1', '"schema": 99'), *ls[1:]], "schema 99"),
        (lambda ls: [ls[0].replace('"host"', '"hots"'), *ls[1:]], "unknown field(s) hots"),
        (lambda ls: [ls[0].replace('"event": "lab"', '"event": "lap"'), *ls[1:]], "unknown event"),
        (lambda ls: [ls[0], ls[0]], "a second lab event"),
        (lambda ls: [], "no lab event"),
    ],
)
def test_a_broken_saved_run_is_one_error_naming_the_line(mutate: Any, message: str) -> None:
    with pytest.raises(RunInvalidError, match=None) as info:
        read_events(mutate(lines_of(record(), "en")), "run.jsonl")
    assert message in str(info.value)
    assert str(info.value).startswith("run.jsonl")
    assert info.value.exit_status is ExitStatus.RUN_INVALID


def test_read_run_refuses_files_that_are_not_text(tmp_path: Path) -> None:
    binary = tmp_path / "x.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RunInvalidError, match="not UTF-8"):
        read_run(binary)
    with pytest.raises(RunInvalidError, match="cannot read"):
        read_run(tmp_path / "missing.jsonl")


def test_conversations_come_from_the_record_segments_and_transitions() -> None:
    (conv,) = record().conversations()
    assert (conv.client, conv.server) == (C, S)
    assert [row.label for row in conv.rows] == ["SYN", "SYN,ACK", "ACK", "FIN,ACK"]
    assert [row.sender for row in conv.rows] == ["client", "server", "client", "client"]
    assert conv.states == ((0.15, "client", "ESTABLISHED"), (29.9, "client", "FIN_WAIT1"))


def test_a_reused_four_tuple_hands_later_transitions_to_the_later_conversation() -> None:
    first = step(
        1, [seg(0.0, "client", "SYN", conv=0)], [transition(0.1, C, S, "SYN_SENT", "CLOSE")]
    )
    second = step(
        2,
        [seg(100.0, "client", "SYN", conv=1)],
        [
            transition(99.0, C, S, "CLOSE", "SYN_SENT"),
            transition(100.2, S, C, "LISTEN", "SYN_RECV"),
        ],
    )
    rec = RunRecord(started(), (first, second), None)
    a, b = rec.conversations()
    assert [s for _, _, s in a.states] == ["CLOSE"]
    assert [(end, s) for _, end, s in b.states] == [("client", "SYN_SENT"), ("server", "SYN_RECV")]


def test_a_time_wait_seen_just_before_the_reconnecting_syn_stays_with_the_old_conversation() -> (
    None
):
    # time-wait-syn on loopback: the table shows TIME_WAIT 3 ms before the new SYN leaves.
    first = step(1, [seg(0.0, "client", "SYN", conv=0)], [])
    seen = {**transition(217.3, S, C, "FIN_WAIT2", "TIME_WAIT"), "source": "table"}
    second = step(
        2,
        [seg(220.6, "client", "SYN", conv=1)],
        [seen, transition(220.0, C, S, "CLOSE", "SYN_SENT")],
    )
    a, b = RunRecord(started(), (first, second), None).conversations()
    assert [(end, s) for _, end, s in a.states] == [("server", "TIME_WAIT")]
    # A traced move that close before the SYN is the new connection's (connect() precedes it).
    assert [(end, s) for _, end, s in b.states] == [("client", "SYN_SENT")]
