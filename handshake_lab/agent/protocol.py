"""The agent's control protocol: message schema, limits, encode/decode. Pure: no I/O.

Theory of operation (the full specification is ``docs/agent.md``):

* Framing: JSON lines. One UTF-8 JSON object per line, ``\\n``-terminated. A request line may be
  ``MAX_LINE`` bytes (64 KiB) at most, newline included; a reply ``MAX_REPLY`` (1 MiB).
* On connect the agent speaks first: a *greeting* with the protocol versions it speaks and a
  fresh random ``nonce``. The client's first request must be ``hello`` carrying
  ``proof = HMAC-SHA256(token, "hslab-agent-v1:" + nonce)`` in hex. The token itself never
  crosses the wire, so a passive listener on the lab network cannot learn it, and a recorded
  session replayed on a new connection fails: its proof is for another nonce.
* Every request is ``{"v": 1, "seq": n, "verb": "...", "args": {...}}`` with no other keys;
  ``seq`` is a positive integer that strictly increases within a connection (a replayed or
  reordered frame is refused). Replies echo ``v`` and ``seq``: ``{"ok": true, "result": {...}}``
  or ``{"ok": false, "error": {"code": "...", "message": "..."}}``.
* Verbs form a fixed table (``VERBS``), each with a typed argument schema checked as strictly as
  the lab loader checks lab files: unknown keys, wrong types (``true`` is not an integer), values
  out of range are refused. Nothing a client sends is ever run as a command or opened as a path.

This module turns bytes into validated ``Request`` records and records into bytes; the agent
(``agent.server``) and the runner's side (``agent.client``) share it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from handshake_lab.observe.base import Address, SocketRecord, Timer
from handshake_lab.spec.model import (
    MAX_KEEPALIVE,
    MAX_LINGER,
    MAX_USER_TIMEOUT,
    STREAM_ACTIONS,
    type_name,
)
from handshake_lab.tcp.states import TcpState
from handshake_lab.topo.nft import HoldKind

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)
MAX_LINE: Final = 64 * 1024
"""Largest request line the agent reads, newline included."""
MAX_REPLY: Final = 1024 * 1024
"""Largest reply line the agent sends and the client reads (snapshots can be long)."""
MAX_PORTS: Final = 64
MAX_SLOT: Final = 64
MAX_OUTCOME: Final = 64
MAX_TIMEOUT: Final = 300.0
"""Longest wait a request may ask for (the lab loader's own limit)."""
MAX_BACKLOG: Final = 4096
NONCE_BYTES: Final = 16
PROOF_CONTEXT: Final = b"hslab-agent-v1:"
AGENT_NAME: Final = "handshake-lab-agent"
NS_OPS: Final = ("add_hold", "release_hold", "dropped", "sysctl", "counters")
HOLD_KINDS: Final = tuple(kind.value for kind in HoldKind)
REQUEST_KEYS: Final = frozenset({"v", "seq", "verb", "args"})


class ErrorCode:
    """The ``error.code`` values. Fatal ones end the connection after the reply."""

    MALFORMED = "malformed"  # not UTF-8, not JSON, not an object, bad envelope (fatal)
    TOO_LARGE = "too_large"  # a line over MAX_LINE (fatal: framing is lost)
    TIMEOUT = "timeout"  # silent or too slow a client (fatal)
    VERSION = "version"  # a protocol version this agent does not speak (fatal)
    AUTH = "auth"  # no hello first, or a wrong proof (fatal)
    REPLAY = "replay"  # seq not greater than the previous one (fatal)
    BUSY = "busy"  # too many connections (fatal)
    UNKNOWN_VERB = "unknown_verb"  # not in VERBS (the session goes on)
    BAD_ARGS = "bad_args"  # arguments fail their schema (the session goes on)
    NO_SESSION = "no_session"  # a lab verb before "begin" (the session goes on)
    UNAVAILABLE = "unavailable"  # the agent cannot do this here (holds outside a lab netns)
    FAILED = "failed"  # the operation failed on the agent (message says why)


FATAL_CODES: Final = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.TOO_LARGE,
        ErrorCode.TIMEOUT,
        ErrorCode.VERSION,
        ErrorCode.AUTH,
        ErrorCode.REPLAY,
        ErrorCode.BUSY,
    }
)


class ProtocolError(Exception):
    """A message that breaks the protocol. ``code`` is one of ``ErrorCode``."""

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES


@dataclass(frozen=True, slots=True)
class Request:
    v: int
    seq: int
    verb: str
    args: Mapping[str, Any]


# -- argument schemas ------------------------------------------------------------------------

Check = Callable[[str, object], object]


def _bad(name: str, want: str, value: object) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_ARGS, f"{name} must be {want}, not {type_name(value)}")


def integer(minimum: int, maximum: int) -> Check:
    def check(name: str, value: object) -> object:
        # bool is an int subclass in Python; in this protocol true is not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, "an integer", value)
        if not minimum <= value <= maximum:
            raise ProtocolError(
                ErrorCode.BAD_ARGS, f"{name} must be in {minimum}..{maximum}, not {value}"
            )
        return value

    return check


def number(minimum: float, maximum: float) -> Check:
    def check(name: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(name, "a number", value)
        if not math.isfinite(value) or not minimum <= value <= maximum:
            raise ProtocolError(
                ErrorCode.BAD_ARGS, f"{name} must be in {minimum:g}..{maximum:g}, not {value}"
            )
        return float(value)

    return check


def text(max_len: int, choices: Sequence[str] | None = None) -> Check:
    def check(name: str, value: object) -> object:
        if not isinstance(value, str):
            raise _bad(name, "a string", value)
        if len(value) > max_len:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{name} is longer than {max_len}")
        if choices is not None and value not in choices:
            raise ProtocolError(
                ErrorCode.BAD_ARGS, f"{name} must be one of {', '.join(choices)}, not {value!r}"
            )
        return value

    return check


def boolean(name: str, value: object) -> object:
    if not isinstance(value, bool):
        raise _bad(name, "true or false", value)
    return value


def nullable(inner: Check) -> Check:
    def check(name: str, value: object) -> object:
        return None if value is None else inner(name, value)

    return check


def int_list(max_items: int, item: Check) -> Check:
    def check(name: str, value: object) -> object:
        if not isinstance(value, list):
            raise _bad(name, "an array", value)
        if len(value) > max_items:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{name} has more than {max_items} items")
        return [item(f"{name}[{i}]", v) for i, v in enumerate(value)]

    return check


def address(name: str, value: object) -> object:
    if not isinstance(value, dict):
        raise _bad(name, "an object {host, port}", value)
    if set(value) != {"host", "port"}:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"{name} must have exactly host and port")
    host = text(255)(f"{name}.host", value["host"])
    port = integer(0, 65535)(f"{name}.port", value["port"])
    assert isinstance(host, str)
    assert isinstance(port, int)
    return Address(host, port)


def json_object(name: str, value: object) -> object:
    if not isinstance(value, dict):
        raise _bad(name, "an object", value)
    return value


def sysctl_value(name: str, value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return text(256)(name, value)


@dataclass(frozen=True, slots=True)
class Arg:
    check: Check
    required: bool = True
    default: object = None


PORT = integer(1, 65535)
SLOT = text(MAX_SLOT)

VERBS: Final[Mapping[str, Mapping[str, Arg]]] = {
    "hello": {"proof": Arg(text(128)), "client": Arg(text(128), required=False, default="")},
    "ping": {},
    "begin": {"echo": Arg(boolean), "lab": Arg(text(128), required=False, default="")},
    "reserve_port": {
        "port": Arg(nullable(PORT), required=False),
        "taken": Arg(int_list(MAX_PORTS, PORT), required=False, default=[]),
    },
    "listen": {
        "slot": Arg(SLOT),
        "port": Arg(PORT),
        "backlog": Arg(integer(0, MAX_BACKLOG)),
        "reuse_address": Arg(nullable(boolean)),
        "accept": Arg(boolean),
    },
    "accept": {"slot": Arg(SLOT)},
    "unlisten": {"slot": Arg(SLOT)},
    "stream_action": {
        "peer": Arg(address),
        "action": Arg(text(16, STREAM_ACTIONS)),
        "data": Arg(nullable(text(MAX_LINE)), required=False),
        "timeout": Arg(number(0.0, MAX_TIMEOUT)),
        "args": Arg(json_object, required=False, default={}),
    },
    "snapshot": {
        "ports": Arg(int_list(MAX_PORTS, PORT)),
        "fast": Arg(boolean, required=False, default=False),
    },
    "observers": {},
    "close_on_eof": {"enabled": Arg(boolean)},
    "ns_op": {"op": Arg(text(16, NS_OPS)), "args": Arg(json_object, required=False, default={})},
    "close_all": {},
    "bye": {},
}
"""Every verb and its arguments. The agent answers these and nothing else."""

HOLD_ID = text(32)
NS_OP_ARGS: Final[Mapping[str, Mapping[str, Arg]]] = {
    "add_hold": {
        "id": Arg(HOLD_ID),
        "kind": Arg(text(32, HOLD_KINDS)),
        "port": Arg(PORT),
        "count": Arg(nullable(integer(1, 1_000_000)), required=False),
        "hook": Arg(nullable(text(8, ("input", "output"))), required=False, default="input"),
    },
    # at: release at that instant of the real-time clock (whole seconds since the epoch)
    "release_hold": {"id": Arg(HOLD_ID), "at": Arg(nullable(integer(0, 2**40)), required=False)},
    "dropped": {"id": Arg(HOLD_ID)},
    "sysctl": {"key": Arg(text(128)), "value": Arg(sysctl_value)},
    "counters": {},
}
"""The namespace operations ``ns_op`` carries (``net.placement.NamespaceOps``), each typed."""

STREAM_ARGS: Final[Mapping[str, Mapping[str, Arg]]] = {
    "linger": {"seconds": Arg(integer(0, MAX_LINGER))},
    "keepalive": {
        "idle": Arg(integer(1, MAX_KEEPALIVE)),
        "interval": Arg(integer(1, MAX_KEEPALIVE)),
        "count": Arg(integer(1, 127)),
    },
    "user_timeout": {"ms": Arg(integer(0, MAX_USER_TIMEOUT))},
}
"""The arguments a stream action takes beyond its data (none unless listed), each typed."""


def validate_args(verb: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``args`` against the verb's schema; fill defaults. ``ProtocolError`` on failure.

    ``ns_op`` arguments are checked against the operation's own schema (``NS_OP_ARGS``), a
    ``stream_action``'s against its action's (``STREAM_ARGS``).
    """
    schema = VERBS.get(verb)
    if schema is None:
        raise ProtocolError(ErrorCode.UNKNOWN_VERB, f"unknown verb {verb[:40]!r}")
    out = _check_schema(verb, schema, args)
    if verb == "ns_op":
        out["args"] = _check_schema(f"ns_op {out['op']}", NS_OP_ARGS[out["op"]], out["args"])
    if verb == "stream_action":
        action = out["action"]
        out["args"] = _check_schema(
            f"stream_action {action}", STREAM_ARGS.get(action, {}), out["args"]
        )
    return out


def _check_schema(verb: str, schema: Mapping[str, Arg], args: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(args) - set(schema))
    if unknown:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"{verb}: unknown argument {unknown[0][:40]!r}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if name in args:
            out[name] = spec.check(name, args[name])
        elif spec.required:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{verb}: missing argument {name!r}")
        else:
            out[name] = spec.default
    return out


# -- requests --------------------------------------------------------------------------------


def _load_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} is not UTF-8") from exc
    except RecursionError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} is nested too deeply") from exc
    except ValueError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} must be a JSON object")
    return doc


def decode_request(line: bytes) -> Request:
    """Parse one request line (without its newline) and check the envelope, not the args.

    Raises ``ProtocolError``: ``malformed`` for a bad envelope, ``version`` for a version this
    agent does not speak. The verb and its arguments are checked by ``validate_args``.
    """
    if len(line) >= MAX_LINE:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"request longer than {MAX_LINE} bytes")
    doc = _load_object(line, "request")
    seq = doc.get("seq")
    good_seq = isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < 2**53
    known_seq = seq if good_seq and isinstance(seq, int) else None
    extra = sorted(set(doc) - REQUEST_KEYS)
    if extra:
        raise ProtocolError(ErrorCode.MALFORMED, f"unknown key {extra[0][:40]!r}", known_seq)
    v = doc.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(ErrorCode.MALFORMED, "v must be an integer", known_seq)
    if v not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(s) for s in SUPPORTED_VERSIONS)
        raise ProtocolError(
            ErrorCode.VERSION,
            f"protocol version {v} is not supported (this agent speaks {supported})",
            known_seq,
        )
    if known_seq is None:
        raise ProtocolError(ErrorCode.MALFORMED, "seq must be a positive integer")
    verb = doc.get("verb")
    if not isinstance(verb, str) or not verb:
        raise ProtocolError(ErrorCode.MALFORMED, "verb must be a non-empty string", known_seq)
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "args must be a JSON object", known_seq)
    return Request(v, known_seq, verb, args)


def encode_request(seq: int, verb: str, args: Mapping[str, object] | None = None) -> bytes:
    doc = {"v": PROTOCOL_VERSION, "seq": seq, "verb": verb, "args": dict(args or {})}
    return _dump(doc)


# -- replies ---------------------------------------------------------------------------------


def _dump(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def encode_ok(seq: int, result: Mapping[str, object]) -> bytes:
    return _dump({"v": PROTOCOL_VERSION, "seq": seq, "ok": True, "result": dict(result)})


def encode_error(seq: int | None, code: str, message: str) -> bytes:
    return _dump(
        {
            "v": PROTOCOL_VERSION,
            "seq": seq,
            "ok": False,
            "error": {"code": code, "message": message[:500]},
        }
    )


def encode_greeting(nonce: str) -> bytes:
    return _dump(
        {
            "v": PROTOCOL_VERSION,
            "agent": AGENT_NAME,
            "versions": list(SUPPORTED_VERSIONS),
            "nonce": nonce,
        }
    )


@dataclass(frozen=True, slots=True)
class Reply:
    seq: int | None
    ok: bool
    result: Mapping[str, Any]
    code: str = ""
    message: str = ""


def decode_reply(line: bytes) -> Reply:
    """Parse one reply line. ``ProtocolError(malformed)`` if it is not a well-formed reply."""
    doc = _load_object(line, "reply")
    seq = doc.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise ProtocolError(ErrorCode.MALFORMED, "reply seq must be an integer or null")
    ok = doc.get("ok")
    if ok is True:
        result = doc.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(ErrorCode.MALFORMED, "reply result must be an object")
        return Reply(seq, True, result)
    if ok is False:
        error = doc.get("error")
        if not isinstance(error, dict):
            raise ProtocolError(ErrorCode.MALFORMED, "reply error must be an object")
        code, message = error.get("code"), error.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise ProtocolError(ErrorCode.MALFORMED, "reply error needs code and message")
        return Reply(seq, False, {}, code, message)
    raise ProtocolError(ErrorCode.MALFORMED, "reply ok must be true or false")


@dataclass(frozen=True, slots=True)
class Greeting:
    versions: tuple[int, ...]
    nonce: str


def decode_greeting(line: bytes) -> Greeting:
    doc = _load_object(line, "greeting")
    if doc.get("agent") != AGENT_NAME:
        raise ProtocolError(ErrorCode.MALFORMED, "not a handshake-lab agent")
    versions = doc.get("versions")
    nonce = doc.get("nonce")
    if (
        not isinstance(versions, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in versions)
        or not isinstance(nonce, str)
        or not 16 <= len(nonce) <= 128
    ):
        raise ProtocolError(ErrorCode.MALFORMED, "greeting needs versions and a nonce")
    return Greeting(tuple(versions), nonce)


def proof(token: str, nonce: str) -> str:
    """What ``hello`` carries: HMAC-SHA256 of the nonce under the token, in hex."""
    return hmac.new(
        token.encode("utf-8"), PROOF_CONTEXT + nonce.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def proof_matches(token: str, nonce: str, offered: str) -> bool:
    """Constant-time comparison of ``offered`` with the expected proof."""
    expected = proof(token, nonce).encode("ascii")
    return hmac.compare_digest(expected, offered.encode("utf-8", errors="replace"))


# -- socket records --------------------------------------------------------------------------


def _address_doc(addr: Address | None) -> dict[str, object] | None:
    return None if addr is None else {"host": addr.host, "port": addr.port}


def record_to_doc(record: SocketRecord) -> dict[str, object]:
    timer = record.timer
    return {
        "source": record.source,
        "state": record.state.name,
        "raw_state": record.raw_state,
        "local": _address_doc(record.local),
        "remote": _address_doc(record.remote),
        "timer": None
        if timer is None
        else {"name": timer.name, "remaining": timer.remaining, "count": timer.count},
        "pid": record.pid,
        "recv_q": record.recv_q,
        "send_q": record.send_q,
    }


def _opt_int(doc: Mapping[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(ErrorCode.MALFORMED, f"record {key} must be an integer or null")
    return value


def record_from_doc(doc: object) -> SocketRecord:
    """Rebuild a ``SocketRecord``; ``ProtocolError(malformed)`` for anything off-schema."""
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "a socket record must be an object")
    try:
        state = TcpState[str(doc["state"])]
        local = address("local", doc["local"])
        remote_doc = doc.get("remote")
        remote = None if remote_doc is None else address("remote", remote_doc)
        timer_doc = doc.get("timer")
        timer = None
        if timer_doc is not None:
            if not isinstance(timer_doc, dict):
                raise ProtocolError(ErrorCode.MALFORMED, "record timer must be an object")
            remaining = number(-1e9, 1e9)("remaining", timer_doc["remaining"])
            count = integer(-(2**31), 2**31)("count", timer_doc["count"])
            assert isinstance(remaining, float)
            assert isinstance(count, int)
            timer = Timer(str(text(64)("timer", timer_doc["name"])), remaining, count)
        source, raw_state = doc["source"], doc["raw_state"]
        if not isinstance(source, str) or not isinstance(raw_state, str):
            raise ProtocolError(ErrorCode.MALFORMED, "record source/raw_state must be strings")
    except KeyError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"socket record lacks {exc.args[0]}") from exc
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad socket record: {exc.message}") from exc
    assert isinstance(local, Address)
    assert remote is None or isinstance(remote, Address)
    return SocketRecord(
        source=source,
        state=state,
        raw_state=raw_state,
        local=local,
        remote=remote,
        timer=timer,
        pid=_opt_int(doc, "pid"),
        recv_q=_opt_int(doc, "recv_q"),
        send_q=_opt_int(doc, "send_q"),
    )


def snapshot_to_doc(snapshot: Mapping[str, Sequence[SocketRecord]]) -> dict[str, object]:
    return {name: [record_to_doc(r) for r in records] for name, records in snapshot.items()}


def snapshot_from_doc(doc: object) -> dict[str, list[SocketRecord]]:
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "snapshot sources must be an object")
    out: dict[str, list[SocketRecord]] = {}
    for name, records in doc.items():
        if not isinstance(records, list):
            raise ProtocolError(ErrorCode.MALFORMED, f"snapshot source {name!r} is not a list")
        out[str(name)] = [record_from_doc(r) for r in records]
    return out


__all__ = [
    "FATAL_CODES",
    "MAX_LINE",
    "MAX_REPLY",
    "NS_OPS",
    "NS_OP_ARGS",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "VERBS",
    "ErrorCode",
    "Greeting",
    "ProtocolError",
    "Reply",
    "Request",
    "decode_greeting",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_greeting",
    "encode_ok",
    "encode_request",
    "proof",
    "proof_matches",
    "record_from_doc",
    "record_to_doc",
    "snapshot_from_doc",
    "snapshot_to_doc",
    "validate_args",
]


# -- the ready line ------------------------------------------------------------------------

READY_PREFIX: Final = "hslab-agent-ready "
"""The agent's first line on stdout once it listens: this prefix, then a JSON object."""


def encode_ready(host: str, port: int, *, netns: str | None, loop: str) -> str:
    """The machine-readable line a started agent prints (one line, no newline)."""
    doc = {"host": host, "port": port, "protocol": PROTOCOL_VERSION, "netns": netns, "loop": loop}
    return READY_PREFIX + json.dumps(doc, sort_keys=True)


def decode_ready(line: str) -> tuple[str, int]:
    """(host, port) from the agent's ready line; ``ProtocolError`` if it is not one."""
    if not line.startswith(READY_PREFIX):
        raise ProtocolError(ErrorCode.MALFORMED, f"not a ready line: {line.strip()[:120]!r}")
    try:
        doc = json.loads(line[len(READY_PREFIX) :])
    except ValueError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, "the ready line is not JSON") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "the ready line is not a JSON object")
    host, port = doc.get("host"), doc.get("port")
    if not isinstance(host, str) or type(port) is not int or not 0 < port <= 65535:
        raise ProtocolError(ErrorCode.MALFORMED, "the ready line lacks host or port")
    return host, port
