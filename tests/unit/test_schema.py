"""The published schema of ``run --json``: one file in the package and in docs/, strict,
documented field by field in docs/json.md, and the package's own validator agrees with
``jsonschema`` on it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from handshake_lab.i18n.lang import LANGS
from handshake_lab.observe.ss import TIMER_NAMES
from handshake_lab.placement.topology import Topology
from handshake_lab.record.codec import JSON_SCHEMA
from handshake_lab.record.schema import KEYWORDS, event_errors, run_schema, schema_version
from handshake_lab.render.watch import JSON_SCHEMA as WATCH_JSON_SCHEMA
from handshake_lab.tcp.states import TcpState
from handshake_lab.topo.nft import HoldKind
from tests.schema_check import schema_errors

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGE_SCHEMA = ROOT / "handshake_lab" / "record" / "schema.json"
ENVELOPE = {"schema", "event"}
EVENTS = ("lab", "step", "result")
WATCH_EVENTS = {
    "watch": "watch",
    "transition": "watch_transition",
    "socket": "watch_socket",
    "summary": "watch_summary",
}
ENVELOPED = {*EVENTS, *WATCH_EVENTS.values()}

LAB = {
    "schema": 1,
    "event": "lab",
    "name": "half-close",
    "title": "t",
    "summary": "s",
    "loop": "asyncio",
    "topology": "loopback",
    "lang": "en",
    "host": "127.0.0.1",
    "ports": {"main": 40000},
    "observers": ["ss", "psutil"],
    "steps": 1,
    "versions": {
        "handshake_lab": "0.1.0",
        "python": "3.11.7",
        "kernel": "6.1.0",
        "psutil": "7.0",
        "ss": "iproute2-6.1.0",
        "loop": "asyncio 3.11.7",
    },
    "intro": None,
    "path": "/labs/half-close.toml",
    "evidence": {"capture": "AF_PACKET on lo", "trace": "off"},
    "notes": [],
    "kernel": {"net.ipv4.tcp_fin_timeout": "60", "net.ipv4.tcp_tw_reuse_delay": None},
}
SEGMENT = {
    "t_ms": 1.5,
    "from": "client",
    "to": "server",
    "src": "127.0.0.1:5000",
    "dst": "127.0.0.1:40000",
    "flags": "FIN,ACK",
    "seq": 4294967295,
    "ack": 7,
    "rel_seq": 6,
    "rel_ack": 1,
    "len": 0,
    "win": 512,
    "label": "FIN,ACK seq=6 ack=1",
    "conv": 0,
    "sender": "client",
    "dropped": True,
    "hold": "fin",
}
STEP = {
    "schema": 1,
    "event": "step",
    "index": 1,
    "id": "close",
    "actor": "client",
    "action": "close",
    "args": {},
    "expected": {"client": "FIN_WAIT2"},
    "observed": {
        "client": {
            "side": "client",
            "state": "FIN_WAIT2",
            "local": "127.0.0.1:5000",
            "remote": "127.0.0.1:40000",
            "sources": {"ss": "FIN-WAIT-2", "psutil": None},
            "agree": False,
            "timer": {"name": "timewait", "remaining": 59.8, "count": 0},
            "pid": None,
            "note": "psutil did not see it",
        }
    },
    "outcome": "ok",
    "expected_outcome": None,
    "data": None,
    "expected_data": None,
    "facts": {"dropped.fin": 1},
    "expected_facts": {},
    "agrees": True,
    "mismatches": [],
    "explain_key": "half-close.step.close",
    "explanation": "x",
    "action_ms": 0.2,
    "settle_ms": 3,
    "total_steps": 1,
    "observed_ms": 12.5,
    "segments": [SEGMENT],
    "transitions": [
        {
            "t_ms": 1.0,
            "side": "client",
            "old": "ESTABLISHED",
            "new": "FIN_WAIT1",
            "cause": "application call",
            "local": "127.0.0.1:5000",
            "remote": "127.0.0.1:40000",
            "source": "trace",
        },
        {
            "t_ms": 2.0,
            "side": "client",
            "old": "FIN_WAIT1",
            "new": "TIME_WAIT",
            "cause": "FIN,ACK",
            "local": "127.0.0.1:5000",
            "remote": "127.0.0.1:40000",
            "source": "trace",
            "traced": "CLOSE",
            "note": "the timewait socket took over",
        },
    ],
    "holds": {"fin": {"kind": "drop_fin", "at": "server", "dropped": 1, "active": True}},
    "quiz": [
        {
            "key": "client",
            "question": "q",
            "answer": "FIN_WAIT2",
            "truth": "FIN_WAIT2",
            "correct": True,
        },
        {"key": "ack", "question": "q", "answer": None, "truth": None, "correct": None},
    ],
}
RESULT = {
    "schema": 1,
    "event": "result",
    "name": "half-close",
    "passed": True,
    "steps": 1,
    "agreed": 1,
    "disagreed": 0,
    "duration_s": 0.7,
    "settle_s": 0.4,
    "disagreed_steps": [],
    "checks": [{"name": "handshake.syn", "ok": True, "detail": "d"}],
    "quiz": {"asked": 1, "correct": 1, "score": 100.0},
}
WATCH = {
    "schema": 1,
    "event": "watch",
    "time": "2026-12-07T10:00:00.000+00:00",
    "observer": "netlink",
    "ports": [8080],
    "pid": None,
    "state": "TIME_WAIT",
    "interval_s": 0.2,
}
WATCH_TRANSITION = {
    "schema": 1,
    "event": "transition",
    "time": "2026-12-07T10:00:00.200+00:00",
    "kind": "changed",
    "initial": False,
    "local": "127.0.0.1:8080",
    "remote": "127.0.0.1:5000",
    "old": "ESTABLISHED",
    "new": "CLOSE_WAIT",
    "in_old_s": 1.5,
    "in_old_lower_bound": True,
    "pid": 42,
    "process": "python3",
    "timer": None,
}
WATCH_SOCKET = {
    "schema": 1,
    "event": "socket",
    "local": "127.0.0.1:8080",
    "remote": None,
    "state": "LISTEN",
    "in_state_s": 3.0,
    "in_state_lower_bound": True,
    "timer": {"name": "keepalive", "remaining": 7200.0, "count": 0},
    "recv_q": 0,
    "send_q": None,
    "pid": None,
    "process": None,
}
WATCH_SUMMARY = {
    "schema": 1,
    "event": "summary",
    "refreshes": 10,
    "sockets": 2,
    "counts": {"LISTEN": 1, "TIME_WAIT": 1},
    "refresh_ms_median": 0.4,
    "observer": "netlink",
}
SAMPLES = {
    "lab": LAB,
    "step": STEP,
    "result": RESULT,
    "watch": WATCH,
    "transition": WATCH_TRANSITION,
    "socket": WATCH_SOCKET,
    "summary": WATCH_SUMMARY,
}


def test_the_package_and_docs_ship_the_same_schema_file() -> None:
    assert (DOCS / "schema.json").read_bytes() == PACKAGE_SCHEMA.read_bytes(), (
        "docs/schema.json differs from the package's: run `make schema`"
    )


def test_the_schema_is_a_valid_draft_2020_12_schema_with_the_codecs_version() -> None:
    schema = run_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_version() == JSON_SCHEMA == WATCH_JSON_SCHEMA
    assert schema["$id"].endswith(f":{JSON_SCHEMA}")


def keywords(node: Any, inside_properties: bool = False) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if not inside_properties:
                found.add(key)
            nested = key in {"properties", "$defs"} and not inside_properties
            if key in {"enum", "const"} and not inside_properties:
                continue
            found |= keywords(value, nested)
    elif isinstance(node, list):
        for item in node:
            found |= keywords(item)
    return found


def test_the_schema_uses_only_keywords_the_packages_validator_implements() -> None:
    assert keywords(run_schema()) <= KEYWORDS


def test_every_event_has_its_definition() -> None:
    schema = run_schema()
    events = schema["properties"]["event"]["enum"]
    assert events == [*EVENTS, *WATCH_EVENTS]
    branches = {
        b["if"]["properties"]["event"]["const"]: b["then"]["$ref"] for b in schema["allOf"]
    }
    assert branches == {e: f"#/$defs/{WATCH_EVENTS.get(e, e)}" for e in events}
    for event, definition in {**{e: e for e in EVENTS}, **WATCH_EVENTS}.items():
        assert schema["$defs"][definition]["properties"]["event"] == {"const": event}


def test_the_schemas_enums_are_the_codes_vocabularies() -> None:
    defs = run_schema()["$defs"]
    lab = defs["lab"]["properties"]
    assert set(lab["topology"]["enum"]) == {t.value for t in Topology}
    assert set(lab["lang"]["enum"]) == set(LANGS)
    assert set(defs["linux_state"]["enum"]) == {s.name for s in TcpState}
    assert set(defs["side_state"]["enum"]) == {s.name for s in TcpState} | {"ABSENT"}
    assert set(defs["hold"]["properties"]["kind"]["enum"]) == {k.value for k in HoldKind}
    assert set(defs["timer"]["properties"]["name"]["enum"]) == set(TIMER_NAMES)


@pytest.mark.parametrize("event", SAMPLES)
def test_a_full_sample_of_each_event_is_valid(event: str) -> None:
    assert schema_errors(SAMPLES[event]) == []
    assert event_errors(SAMPLES[event]) == []


def mutations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Broken copies of ``doc``: every field removed, retyped, and an extra field, at the top
    and in the nested records."""
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any, path: list[str | int]) -> None:
        if isinstance(node, dict):
            for key in list(node):
                walk(node[key], [*path, key])
            out.append((f"extra {path}", _mutate(doc, path, "extra")))
            for key in node:
                out.append((f"drop {path}.{key}", _mutate(doc, path, "drop", key)))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, [*path, index])
        out.append((f"retype {path}", _mutate(doc, path, "retype")))

    walk(doc, [])
    return out


def _mutate(
    doc: dict[str, Any], path: list[str | int], kind: str, key: str = ""
) -> dict[str, Any]:
    copied = copy.deepcopy(doc)
    parent: Any = None
    node: Any = copied
    for part in path:
        parent, node = node, node[part]
    if kind == "extra":
        node["surplus_field"] = 1
    elif kind == "drop":
        del node[key]
    elif kind == "retype" and parent is not None:
        parent[path[-1]] = [] if not isinstance(node, list) else "x"
    return copied


@pytest.mark.parametrize("event", SAMPLES)
def test_the_packages_validator_agrees_with_jsonschema_on_every_mutation(event: str) -> None:
    cases = mutations(SAMPLES[event])
    assert len(cases) > 15
    invalid = 0
    for name, doc in cases:
        full = schema_errors(doc)
        ours = event_errors(doc)
        assert bool(full) == bool(ours), (name, full, ours)
        invalid += bool(full)
    assert invalid > len(cases) // 2  # the schema is strict: most changes break it


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(schema=2), "schema"),
        (lambda d: d.update(new_field=1), "new_field"),
        (lambda d: d["segments"][0].update(seq=2**32), "seq"),
        (lambda d: d["segments"][0].update(seq=True), "seq"),
        (lambda d: d["observed"]["client"].update(state="FIN-WAIT-2"), "state"),
        (lambda d: d["holds"]["fin"].update(kind="drop_everything"), "kind"),
        (lambda d: d.pop("quiz"), "quiz"),
    ],
)
def test_a_drift_from_the_record_fails_validation(change: Any, where: str) -> None:
    doc = copy.deepcopy(STEP)
    change(doc)
    assert schema_errors(doc)
    assert any(where in error for error in event_errors(doc)), event_errors(doc)


MARKER = re.compile(r"<!-- schema: (\w+) -->\n((?:\|.*\n)+)")
FIELD = re.compile(r"`([a-z_]+)`")


def documented() -> dict[str, set[str]]:
    """docs/json.md's tables, by the schema object each documents: the first column's names."""
    text = (DOCS / "json.md").read_text(encoding="utf-8")
    tables: dict[str, set[str]] = {}
    for name, table in MARKER.findall(text):
        rows = table.strip().splitlines()[2:]  # below the header and the --- line
        tables[name] = {f for row in rows for f in FIELD.findall(row.split("|")[1])}
    return tables


def test_every_field_of_the_schema_is_documented_in_json_md_and_nothing_else() -> None:
    defs = run_schema()["$defs"]
    wanted = {"envelope": ENVELOPE}
    for name, node in defs.items():
        if "properties" in node:
            props = set(node["properties"])
            wanted[name] = props - ENVELOPE if name in ENVELOPED else props
    assert documented() == wanted


def test_the_docs_link_the_schema_and_the_readme_names_it() -> None:
    assert "(schema.json)" in (DOCS / "json.md").read_text(encoding="utf-8")
    assert "docs/schema.json" in (ROOT / "README.md").read_text(encoding="utf-8")
