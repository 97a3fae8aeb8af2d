"""The agent protocol's pure parts: framing, envelopes, argument schemas, records, tokens."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handshake_lab.agent.client import parse_peer
from handshake_lab.agent.protocol import (
    MAX_LINE,
    VERBS,
    ErrorCode,
    ProtocolError,
    decode_greeting,
    decode_reply,
    decode_request,
    encode_error,
    encode_greeting,
    encode_ok,
    encode_request,
    proof,
    proof_matches,
    record_from_doc,
    record_to_doc,
    snapshot_from_doc,
    snapshot_to_doc,
    validate_args,
)
from handshake_lab.agent.server import HANDLERS
from handshake_lab.agent.token import (
    TOKEN_ENV,
    TokenError,
    agent_token,
    load_token,
    read_token_file,
    write_token_file,
)
from handshake_lab.errors import NetworkError
from handshake_lab.observe.base import Address, SocketRecord, Timer
from handshake_lab.tcp.states import TcpState


def code_of(line: bytes) -> str:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    return caught.value.code


def test_request_round_trips() -> None:
    line = encode_request(7, "listen", {"slot": "main"})
    assert line.endswith(b"\n")
    request = decode_request(line[:-1])
    assert (request.v, request.seq, request.verb, dict(request.args)) == (
        1,
        7,
        "listen",
        {"slot": "main"},
    )


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", ErrorCode.MALFORMED),
        (b"[]", ErrorCode.MALFORMED),
        (b"\xff", ErrorCode.MALFORMED),
        (b'{"v":1,"seq":1}', ErrorCode.MALFORMED),
        (b'{"v":1,"seq":0,"verb":"ping"}', ErrorCode.MALFORMED),
        (b'{"v":1,"seq":true,"verb":"ping"}', ErrorCode.MALFORMED),
        (b'{"v":1,"seq":1,"verb":"ping","args":[]}', ErrorCode.MALFORMED),
        (b'{"v":1,"seq":1,"verb":"ping","token":"x"}', ErrorCode.MALFORMED),
        (b'{"v":true,"seq":1,"verb":"ping"}', ErrorCode.MALFORMED),
        (b'{"v":2,"seq":1,"verb":"ping"}', ErrorCode.VERSION),
        (b"[" * 100_000 + b"]" * 100_000, ErrorCode.TOO_LARGE),
        (b"[" * 30_000 + b"]" * 30_000, ErrorCode.MALFORMED),
    ],
)
def test_bad_envelopes_are_refused_with_their_code(line: bytes, code: str) -> None:
    assert code_of(line) == code


def test_fatal_codes_are_the_framing_and_auth_ones() -> None:
    assert ProtocolError(ErrorCode.AUTH, "x").fatal
    assert ProtocolError(ErrorCode.REPLAY, "x").fatal
    assert not ProtocolError(ErrorCode.UNKNOWN_VERB, "x").fatal
    assert not ProtocolError(ErrorCode.BAD_ARGS, "x").fatal


@given(st.binary(max_size=2000))
def test_decode_request_raises_only_protocol_errors(line: bytes) -> None:
    code = None
    try:
        decode_request(line)
    except ProtocolError as exc:
        code = exc.code
    assert code in {None, ErrorCode.MALFORMED, ErrorCode.VERSION, ErrorCode.TOO_LARGE}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


# too_slow measures how long data generation took in wall-clock time: on a loaded 2-core
# machine that is the machine's load, not this strategy, whose cost is bounded (max_leaves=8,
# texts of at most 10 characters, dictionaries of 6 keys at most). The number of examples and
# what each one checks stay as they were.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["port", "slot", "peer", "ports", "echo", "x"]), JSON, max_size=6
    )
)
def test_validate_args_raises_only_protocol_errors(args: dict[str, object]) -> None:
    for verb in VERBS:
        code = ErrorCode.BAD_ARGS
        try:
            validate_args(verb, args)
        except ProtocolError as exc:
            code = exc.code
        assert code == ErrorCode.BAD_ARGS


def test_the_verb_table_is_fixed_and_matches_the_handlers() -> None:
    assert set(VERBS) == set(HANDLERS)
    for shellish in ("exec", "shell", "run", "system", "eval", "open", "file"):
        with pytest.raises(ProtocolError) as caught:
            validate_args(shellish, {})
        assert caught.value.code == ErrorCode.UNKNOWN_VERB


def test_arguments_are_checked_as_strictly_as_lab_files() -> None:
    op = validate_args(
        "ns_op", {"op": "add_hold", "args": {"id": "a", "kind": "drop_syn", "port": 1}}
    )
    assert op["args"] == {"id": "a", "kind": "drop_syn", "port": 1, "count": None, "hook": "input"}
    good = validate_args(
        "listen",
        {"slot": "main", "port": 8080, "backlog": 0, "reuse_address": None, "accept": False},
    )
    assert good["reuse_address"] is None
    assert validate_args("reserve_port", {}) == {"port": None, "taken": []}
    timed = validate_args("ns_op", {"op": "release_hold", "args": {"id": "a", "at": 1800000000}})
    assert timed["args"] == {"id": "a", "at": 1800000000}
    assert validate_args("ns_op", {"op": "release_hold", "args": {"id": "a"}})["args"] == {
        "id": "a",
        "at": None,
    }
    bad: list[tuple[str, dict[str, object]]] = [
        ("listen", {"slot": "main", "port": True, "backlog": 1, "reuse_address": 1, "accept": 1}),
        ("reserve_port", {"port": 0}),
        ("reserve_port", {"taken": [1, "2"]}),
        ("stream_action", {"peer": {"host": "h"}, "action": "send", "timeout": 1}),
        ("stream_action", {"peer": {"host": "h", "port": 1}, "action": "send", "timeout": 1e9}),
        ("stream_action", {"peer": {"host": "h", "port": 1}, "action": "send", "timeout": "1"}),
        ("ns_op", {"op": "add_hold", "args": {"id": "a", "kind": "drop_most", "port": 80}}),
        ("ns_op", {"op": "sysctl", "args": {"key": "net.a.b", "value": True}}),
        ("ns_op", {"op": "rm", "args": {}}),
        ("ns_op", {"op": "counters", "args": []}),
        ("ns_op", {"op": "release_hold", "args": {"id": "a", "at": -1}}),
        ("ns_op", {"op": "release_hold", "args": {"id": "a", "at": "soon"}}),
        ("hello", {}),
        ("ping", {"extra": 1}),
    ]
    for verb, args in bad:
        with pytest.raises(ProtocolError) as caught:
            validate_args(verb, args)
        assert caught.value.code == ErrorCode.BAD_ARGS, (verb, args)


def test_replies_round_trip() -> None:
    ok = decode_reply(encode_ok(3, {"port": 5})[:-1])
    assert (ok.seq, ok.ok, dict(ok.result)) == (3, True, {"port": 5})
    err = decode_reply(encode_error(None, "auth", "wrong token")[:-1])
    assert (err.seq, err.ok, err.code, err.message) == (None, False, "auth", "wrong token")
    with pytest.raises(ProtocolError):
        decode_reply(b'{"ok":"yes"}')


def test_greeting_and_proof() -> None:
    greeting = decode_greeting(encode_greeting("ab" * 16)[:-1])
    assert greeting.versions == (1,)
    token = "t" * 64
    mac = proof(token, greeting.nonce)
    assert len(mac) == 64
    assert token not in mac
    assert proof_matches(token, greeting.nonce, mac)
    assert not proof_matches(token, "cd" * 16, mac)
    assert not proof_matches("u" * 64, greeting.nonce, mac)
    assert not proof_matches(token, greeting.nonce, "\u00e9" * 64)  # non-ASCII: no TypeError


def test_socket_records_round_trip_through_json() -> None:
    records = [
        SocketRecord(
            "ss",
            TcpState.TIME_WAIT,
            "TIME-WAIT",
            Address("10.0.0.1", 80),
            Address("10.0.0.2", 5555),
            timer=Timer("timewait", 59.5, 0),
            recv_q=0,
            send_q=0,
        ),
        SocketRecord("psutil", TcpState.LISTEN, "LISTEN", Address("10.0.0.1", 80), None, pid=42),
    ]
    doc = json.loads(json.dumps(snapshot_to_doc({"ss": records[:1], "psutil": records[1:]})))
    assert snapshot_from_doc(doc) == {"ss": records[:1], "psutil": records[1:]}
    assert record_from_doc(record_to_doc(records[0])) == records[0]
    broken = record_to_doc(records[0])
    broken["state"] = "NOT_A_STATE"
    with pytest.raises(ProtocolError):
        record_from_doc(broken)
    with pytest.raises(ProtocolError):
        snapshot_from_doc({"ss": "nope"})


def test_max_line_is_64_kib() -> None:
    assert MAX_LINE == 65536


# -- tokens and peers ------------------------------------------------------------------------


def test_token_file_is_written_mode_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "agent.token"
    token, origin = agent_token(path, environ={})
    assert len(token) == 64
    assert re.fullmatch(r"[0-9a-f]{64}", token), token  # 32 random bytes as hex
    assert "written" in origin
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert agent_token(path, environ={}) == (token, f"token file {path}")
    assert load_token(path, environ={}) == token


def test_an_open_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    write_token_file(path, "a" * 64)
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        read_token_file(path)


def test_token_from_the_environment_and_short_tokens(tmp_path: Path) -> None:
    assert load_token(None, environ={TOKEN_ENV: "b" * 64}) == "b" * 64
    assert load_token(None, environ={}) is None
    with pytest.raises(TokenError):
        load_token(None, environ={TOKEN_ENV: "short"})
    assert agent_token(None, environ={TOKEN_ENV: "c" * 40}) == ("c" * 40, TOKEN_ENV)


def test_parse_peer() -> None:
    assert parse_peer("10.0.0.5") == ("10.0.0.5", 7878)
    assert parse_peer("10.0.0.5:9000") == ("10.0.0.5", 9000)
    assert parse_peer("server.lab:9000") == ("server.lab", 9000)
    for bad in ("", ":80", "10.0.0.5:http", "10.0.0.5:0", "10.0.0.5:70000", "a b:1"):
        with pytest.raises(NetworkError):
            parse_peer(bad)
