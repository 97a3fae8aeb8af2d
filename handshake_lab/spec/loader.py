"""Load lab files (TOML) into frozen ``Lab`` records, or fail with one clear line.

Every problem raises ``LabInvalidError`` naming the file and, where there is one, the step:
bad TOML, unknown keys (typos should not pass silently), wrong types, unknown actions, actors,
sides, states or outcomes, duplicate step ids. Nothing else escapes: the loader is fuzzed with
hypothesis to hold that promise. Suggestions for near misses come from ``difflib``.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from handshake_lab.errors import LabInvalidError, LabNotFoundError
from handshake_lab.spec.model import (
    ABSENT,
    ACTIONS,
    COURSE_KEYS,
    DEFAULT_TIMEOUT,
    DUAL_ONLY_ARGS,
    HOLD_KINDS,
    LAB_IP,
    LEVELS,
    MAIN_PORT,
    MAX_TIMEOUT,
    NETNS_ONLY_ACTIONS,
    NOT_DUAL_ACTIONS,
    ONE_PROCESS_ACTIONS,
    ONLY,
    OUTCOMES,
    PRIVILEGES,
    SCHEMA_VERSION,
    STEP_SETS,
    SYSCTL_PLACEHOLDER,
    TOPOLOGIES,
    ArgValue,
    Course,
    Expected,
    Hold,
    Lab,
    Step,
    Text,
    listener_side,
    server_side,
    type_name,
)
from handshake_lab.spec.source import (
    KeyPath,
    SourceMap,
    deepest_line,
    line_at_byte,
    toml_error_line,
)
from handshake_lab.tcp.states import TcpState

T = TypeVar("T")

MAX_FILE_BYTES = 1 << 20
MAX_STEPS = 500
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Dot-separated words of [a-z0-9_]: no empty part, no "..", no "/", nothing a path could use.
# fullmatch: "$" would also match before a final newline.
SYSCTL_RE = re.compile(r"net\.(ipv4|core)(\.[a-z0-9_]{1,40}){1,4}")
TOP_KEYS = frozenset(
    {
        "schema",
        "name",
        "title",
        "summary",
        "intro",
        "clients",
        "echo",
        "topologies",
        "sysctls",
        "course",
        "ip",
        "step",
    }
)
LAB_KEYS = frozenset({"title", "summary", "step"})
"""A file with none of these is not a lab at all (and gets one error saying so)."""
HOLD_KEYS = frozenset({"id", "kind", "at", "port", "count", "hook"})
COMPARISON_RE = re.compile(r"^(>=|<=|>|<|==)\s*(-?\d+)$")
STEP_KEYS = frozenset(
    {
        "id",
        "actor",
        "action",
        "args",
        "expect",
        "outcome",
        "data",
        "facts",
        "timeout",
        "stay",
        "hold",
        "release",
        "only",
        "explain",
    }
)


def builtin_dir() -> Path:
    """Where the built-in labs live: inside the wheel, or ``labs/`` in a source checkout."""
    packaged = Path(str(resources.files("handshake_lab"))) / "labs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "labs"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def find_lab(name_or_path: str) -> Lab:
    """Load a built-in lab by name, or a lab file by path."""
    looks_like_path = "/" in name_or_path or name_or_path.endswith(".toml")
    if looks_like_path:
        path = Path(name_or_path)
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise LabNotFoundError(f"{name_or_path}: no such lab file") from None
        except OSError as exc:
            # EACCES on a directory of the path (``/root/x.toml`` as nobody): Path.exists()
            # lets that through as a traceback. Unreadable is LAB_INVALID, as read_data_file.
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "cannot read")
            raise LabInvalidError(name_or_path, f"cannot read: {reason}") from exc
        return load_lab(path)
    names = builtin_names()
    if name_or_path in names:
        return load_lab(builtin_dir() / f"{name_or_path}.toml")
    close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise LabNotFoundError(
        f"no lab named {name_or_path!r}{hint} (see 'handshake-lab list', or give a path)"
    )


def read_data_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a small user-given file (a lab, an answers file), or ``LabInvalidError``.

    O_NONBLOCK: opening a FIFO must not wait for a writer. Only regular files are read, and
    never more than ``limit``: /dev/zero would otherwise be read until memory ends.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(info.st_mode):
                raise LabInvalidError(where, "not a regular file")
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            size = max(info.st_size, len(raw))
            raise LabInvalidError(
                where,
                f"file is {size} bytes; it may be {limit // (1 << 20)} MiB at most",
                line=line_at_byte(raw, limit),  # where the limit is crossed
            )
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "cannot read")
        raise LabInvalidError(where, f"cannot read: {reason}") from exc
    return raw


def load_lab(path: Path) -> Lab:
    return parse_lab(read_data_file(path), str(path), path)


def parse_lab(raw: bytes, where: str, path: Path | None = None) -> Lab:
    """Parse lab TOML bytes. ``where`` names the file in error messages; the first problem
    found is raised (``check_lab`` returns them all)."""
    lab, errors = check_lab(raw, where, path)
    if errors:
        raise errors[0]
    assert lab is not None
    return lab


def check_lab(
    raw: bytes, where: str, path: Path | None = None
) -> tuple[Lab | None, list[LabInvalidError]]:
    """Every problem of a lab file, each with its line and step, in file order of the checks;
    the lab when there is none. A problem in one step does not hide one in the next."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = line_at_byte(raw, exc.start)
        return None, [LabInvalidError(where, f"not UTF-8 text (byte {exc.start})", line=line)]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = toml_error_line(str(exc))
        return None, [LabInvalidError(where, f"not valid TOML: {exc}", line=at)]
    except RecursionError:
        deep = deepest_line(text)
        return None, [LabInvalidError(where, "not valid TOML: nested too deeply", line=deep)]
    if not doc:
        message = "the file is empty: missing title, summary and at least one [[step]]"
        return None, [LabInvalidError(where, message, line=1)]
    ctx = _Ctx(where, SourceMap(text))
    if not doc.keys() & LAB_KEYS:
        # A TOML file, but not a lab: one line, not a missing-key error for each lab key.
        unknown = ", ".join(repr(k) for k in list(doc)[:3])
        message = (
            f"not a lab file: no title, summary or [[step]] (unknown top-level key {unknown})"
        )
        return None, [LabInvalidError(where, message, line=ctx.source.line_of((next(iter(doc)),)))]
    try:
        lab = _build(ctx, doc, path or Path(where))
    except LabInvalidError as exc:  # a problem the rest of the file cannot be checked past
        ctx.errors.append(exc)
        lab = None
    return (None if ctx.errors else lab), ctx.errors


class _Ctx:
    """Where the loader is: the file, the step, the key path (``at``) for the line number;
    and the problems found so far."""

    def __init__(self, where: str, source: SourceMap) -> None:
        self.where = where
        self.source = source
        self.step: str | None = None
        self.at: KeyPath = ()
        self.errors: list[LabInvalidError] = []

    def fail(self, message: str, at: KeyPath | None = None) -> LabInvalidError:
        key = self.at if at is None else at
        return LabInvalidError(self.where, message, self.step, self.source.line_of(key))

    def keep(self, fn: Callable[[], T], default: T) -> T:
        """``fn()``, or, if it finds a problem, the problem noted and ``default``."""
        try:
            return fn()
        except LabInvalidError as exc:
            self.errors.append(exc)
            return default


def _suggest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_keys(ctx: _Ctx, table: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    """Note every key of ``table`` (at ``ctx.at``) that is not ``allowed``; check on."""
    for key in table:
        if key not in allowed:
            where = (*ctx.at, key)
            ctx.errors.append(
                ctx.fail(f"unknown {what} key {key!r}{_suggest(key, allowed)}", where)
            )


def _str(ctx: _Ctx, value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ctx.fail(f"{what} must be a string, not {_type(value)}")
    return value


def _type(value: object) -> str:
    return type_name(value, mapping="a table")


def _text(ctx: _Ctx, value: object, what: str, *, required: bool = True) -> Text | None:
    if value is None:
        if required:
            raise ctx.fail(f"missing {what} (a table with en and zh)")
        return None
    if isinstance(value, str):
        _placeholders(ctx, value, what)
        return Text(value, value)
    if not isinstance(value, dict):
        raise ctx.fail(
            f"{what} must be a table like {{en = '...', zh = '...'}}, not {_type(value)}"
        )
    _unknown_keys(ctx, value, frozenset({"en", "zh"}), what)
    if "en" not in value:
        raise ctx.fail(f"{what} needs an 'en' text")
    en = _str(ctx, value["en"], f"{what}.en")
    zh = _str(ctx, value.get("zh", en), f"{what}.zh")
    _placeholders(ctx, en, f"{what}.en")
    _placeholders(ctx, zh, f"{what}.zh")
    return Text(en.strip(), zh.strip())


def _placeholders(ctx: _Ctx, text: str, what: str) -> None:
    """Every ``{sysctl:`` in a text must be a well-formed ``{sysctl:net.x.y}``."""
    well_formed = len(SYSCTL_PLACEHOLDER.findall(text))
    if text.count("{sysctl:") != well_formed:
        raise ctx.fail(
            f"{what}: a placeholder must read {{sysctl:net.ipv4.NAME}} "
            "(lower-case net.* key, closed with })"
        )


def _at(ctx: _Ctx, *key: str | int) -> _Ctx:
    ctx.at = key
    return ctx


_NO_TEXT = Text("", "")


def _build(ctx: _Ctx, doc: dict[str, Any], path: Path) -> Lab:
    _unknown_keys(_at(ctx), doc, TOP_KEYS, "top-level")
    schema = doc.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise _at(ctx, "schema").fail(
            f"schema {schema!r} is not supported (this version reads {SCHEMA_VERSION})"
        )
    name = ctx.keep(lambda: _name(_at(ctx, "name"), doc.get("name", path.stem)), path.stem)
    title: Text | None = ctx.keep(
        lambda: _text(_at(ctx, "title"), doc.get("title"), "title"), None
    )
    summary: Text | None = ctx.keep(
        lambda: _text(_at(ctx, "summary"), doc.get("summary"), "summary"), None
    )
    intro = ctx.keep(
        lambda: _text(_at(ctx, "intro"), doc.get("intro"), "intro", required=False), None
    )
    echo = doc.get("echo", True)
    if not isinstance(echo, bool):
        ctx.errors.append(_at(ctx, "echo").fail(f"echo must be true or false, not {_type(echo)}"))
    # What the steps are checked against: past a problem here, they cannot be.
    clients = _clients(_at(ctx, "clients"), doc.get("clients", ["client"]))
    topologies = _topologies(_at(ctx, "topologies"), doc.get("topologies", list(TOPOLOGIES)))
    sysctls: dict[str, dict[str, str | int]] = ctx.keep(
        lambda: _sysctls(_at(ctx, "sysctls"), doc.get("sysctls", {})), {}
    )
    if sysctls and "loopback" in topologies:
        ctx.errors.append(
            ctx.fail("sysctls apply inside the lab's namespaces: set topologies = ['netns']")
        )
    lab_ip = doc.get("ip", "any")
    if lab_ip not in LAB_IP:
        ctx.errors.append(
            _at(ctx, "ip").fail(
                f"ip must be 'any' (the run's --ip) or 'dual' (both families), not {lab_ip!r}"
            )
        )
        lab_ip = "any"
    steps_raw = doc.get("step")
    _at(ctx, "step")
    if steps_raw is not None and not isinstance(steps_raw, list):
        raise ctx.fail(
            f"step must be an array of tables ([[step]] sections), not {_type(steps_raw)}"
        )
    if not steps_raw:
        raise ctx.fail("a lab needs at least one [[step]]")
    if len(steps_raw) > MAX_STEPS:
        raise ctx.fail(f"{len(steps_raw)} steps; a lab may have {MAX_STEPS} at most")
    # Port slots are whatever the steps name; 'main' always exists (it is --port).
    ports = [MAIN_PORT]
    for raw in steps_raw:
        if not isinstance(raw, dict):
            continue
        args = raw.get("args", {})
        action_name = raw.get("action")
        spec = ACTIONS.get(action_name) if isinstance(action_name, str) else None
        port = args.get("port") if isinstance(args, dict) else None
        if port is None and spec is not None and "port" in spec.args:
            port = spec.args["port"].default  # e.g. self_connect's own slot
        if isinstance(port, str) and port not in ports:
            ports.append(port)
    sides = {listener_side(p) for p in ports}
    for c in clients:
        sides.update({c, server_side(c)})
    steps: list[Step] = []
    seen: set[str] = set()
    holds_seen: set[str] = set()
    for index, raw in enumerate(steps_raw, start=1):
        ctx.step = str(index)
        _at(ctx, "step", index - 1)
        try:
            step = _step(ctx, raw, index, clients, sides, ports)
            _across_steps(ctx, step, topologies, seen, holds_seen)
            _families(ctx, step, lab_ip == "dual", ports)
        except LabInvalidError as exc:
            ctx.errors.append(exc)
            continue
        steps.append(step)
    ctx.step = None
    course = None
    if "course" in doc:
        complete = len(steps) == len(steps_raw)  # else the states cannot be compared
        course = ctx.keep(
            lambda: _course(_at(ctx, "course"), doc["course"], topologies, steps, complete), None
        )
    return Lab(
        name=name,
        title=title or _NO_TEXT,
        summary=summary or _NO_TEXT,
        intro=intro,
        clients=tuple(clients),
        ports=tuple(ports),
        echo=echo is True,
        steps=tuple(steps),
        path=path,
        topologies=topologies,
        sysctls=sysctls,
        course=course,
        ip=str(lab_ip),
    )


def _families(ctx: _Ctx, step: Step, dual: bool, ports: list[str]) -> None:
    """The address-family arguments of one step against the lab's ``ip``: a socket of a
    family the run does not read would be invisible to its observers (one family per run
    unless ``ip = "dual"``), and a dual lab must say the family of every socket it opens."""
    base = ctx.at
    args = step.args

    def fail(key: str, message: str) -> LabInvalidError:
        return ctx.fail(message, (*base, "args", key) if key in args else (*base, "action"))

    if step.action in NOT_DUAL_ACTIONS and dual:
        raise fail("", f"{step.action} uses the run's one address: not in an ip = 'dual' lab")
    for action, key in DUAL_ONLY_ARGS.items():
        if step.action != action:
            continue
        if key in args and not dual:
            raise fail(key, f"{key} needs ip = 'dual' at the top of the lab (both families)")
        if key not in args and dual:
            raise fail(key, f"in an ip = 'dual' lab, {action} must say {key} = 4 or 6")
    if step.action != "listen":
        return
    bind = str(args.get("bind", "server"))
    if bind != "server" and not dual:
        raise fail("bind", f"bind = {bind!r} needs ip = 'dual' at the top of the lab")
    if bind == "server" and dual:
        raise fail("bind", "in an ip = 'dual' lab, listen must say bind = '::' or '0.0.0.0'")
    v6only = args.get("v6only", "default")
    if v6only != "default" and bind != "::":
        raise fail("v6only", "v6only is an IPv6 socket option: it needs bind = '::'")
    if v6only != "default" and args.get("reuse_address") == "default":
        raise fail(
            "v6only",
            "v6only needs reuse_address = true or false (with 'default' the loop binds the "
            "socket before it could be set)",
        )
    same = args.get("same_port_as")
    if same is None:
        return
    slot = str(args.get("port", MAIN_PORT))
    if slot == MAIN_PORT:
        raise fail("same_port_as", "same_port_as needs a slot of its own: port = 'NAME'")
    if same == slot or same not in ports:
        raise fail("same_port_as", f"same_port_as {same!r} is not another port slot of the lab")


def _name(ctx: _Ctx, raw: object) -> str:
    name = _str(ctx, raw, "name")
    if not NAME_RE.match(name):
        raise ctx.fail(f"name {name!r} must be lowercase letters, digits, '-' or '_'")
    return name


def _clients(ctx: _Ctx, raw: object) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise ctx.fail("clients must be a non-empty array of names")
    clients: list[str] = []
    for item in raw:
        c = _str(ctx, item, "each client name")
        if not NAME_RE.match(c) or c in {"server", "listener", "lab"} or "." in c:
            raise ctx.fail(f"client name {c!r} is not allowed")
        if c in clients:
            raise ctx.fail(f"client {c!r} is listed twice")
        clients.append(c)
    return clients


def _across_steps(
    ctx: _Ctx, step: Step, topologies: tuple[str, ...], seen: set[str], holds_seen: set[str]
) -> None:
    """The checks of one step against the lab and the steps before it."""
    base = ctx.at
    if step.id in seen:
        raise ctx.fail(f"duplicate step id {step.id!r}", (*base, "id"))
    if step.only is not None and not {STEP_SETS[s] for s in ONLY[step.only]} & set(topologies):
        raise ctx.fail(
            f"only = {step.only!r} but the lab's topologies are {list(topologies)}",
            (*base, "only"),
        )
    runs_on_loopback = "loopback" in topologies and step.only in (None, "loopback")
    runs_at_agent = "netns" in topologies and (
        step.only is None or "netns-agent" in ONLY[step.only]
    )
    if step.action in ONE_PROCESS_ACTIONS and runs_at_agent:
        raise ctx.fail(
            f"{step.action} needs both ends in this process, which an agent's server is "
            "not: add only = 'netns-local' (and give netns-agent its own steps)",
            (*base, "action"),
        )
    if step.action in NETNS_ONLY_ACTIONS and runs_on_loopback:
        raise ctx.fail(
            f"{step.action} needs the netns topology: add only = 'netns'", (*base, "action")
        )
    if step.holds and runs_on_loopback:
        raise ctx.fail(
            "holds are nftables rules in the lab's namespaces: add only = 'netns' "
            "(or topologies = ['netns'])",
            (*base, "hold"),
        )
    for hold_id in step.release:
        if hold_id not in holds_seen:
            raise ctx.fail(
                f"release {hold_id!r}: no earlier step declares that hold", (*base, "release")
            )
    for hold in step.holds:
        if hold.id in holds_seen:
            raise ctx.fail(f"hold id {hold.id!r} is used twice", (*base, "hold"))
        holds_seen.add(hold.id)
    seen.add(step.id)


def shown_states(steps: Iterable[Step]) -> tuple[TcpState, ...]:
    """The TCP states the steps expect, in order of first appearance (ABSENT is no state):
    what a lab's ``course.states`` must list."""
    out: dict[TcpState, None] = {}
    for step in steps:
        for state in step.expect.values():
            if state is not None:
                out.setdefault(state)
    return tuple(out)


def _course(
    ctx: _Ctx, raw: object, topologies: tuple[str, ...], steps: list[Step], complete: bool
) -> Course:
    if not isinstance(raw, dict):
        raise ctx.fail(f"course must be a table (a [course] section), not {_type(raw)}")
    base = ctx.at
    _unknown_keys(ctx, raw, COURSE_KEYS, "course")
    missing = COURSE_KEYS - set(raw)
    for key in sorted(missing):
        ctx.errors.append(ctx.fail(f"course needs {key!r}", base))

    def whole(key: str, low: int, high: int) -> int:
        value = raw.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ctx.fail(
                f"course.{key} must be a whole number from {low} to {high}", (*base, key)
            )
        return value

    # A missing key was said once above: it is not checked again below.
    level = ctx.keep(lambda: whole("level", 1, max(LEVELS)), 1)
    order = ctx.keep(lambda: whole("order", 1, 999), 1)
    duration: dict[str, int] = {}
    if "duration" not in missing:
        duration = ctx.keep(lambda: _duration(_at(ctx, *base, "duration"), raw, topologies), {})
    privileges = "none"
    if "privileges" not in missing:
        privileges = ctx.keep(
            lambda: _privileges(_at(ctx, *base, "privileges"), raw, topologies), "none"
        )
    states: tuple[TcpState, ...] = ()
    if "states" not in missing:
        states = ctx.keep(
            lambda: _course_states(_at(ctx, *base, "states"), raw, steps if complete else None),
            (),
        )
    return Course(level, order, duration, privileges, states)


def _duration(ctx: _Ctx, raw: dict[str, Any], topologies: tuple[str, ...]) -> dict[str, int]:
    value = raw.get("duration", {})
    shape = "a table of whole seconds per topology, e.g. { loopback = 1, netns = 3 }"
    if not isinstance(value, dict):
        raise ctx.fail(f"course.duration must be {shape}, not {_type(value)}")
    if set(value) != set(topologies):
        raise ctx.fail(
            f"course.duration must give exactly the lab's topologies ({', '.join(topologies)}): "
            f"{shape}"
        )
    out: dict[str, int] = {}
    for topo in topologies:
        seconds = value[topo]
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 3600:
            raise ctx.fail(f"course.duration.{topo} must be whole seconds from 1 to 3600")
        out[topo] = seconds
    return out


def _privileges(ctx: _Ctx, raw: dict[str, Any], topologies: tuple[str, ...]) -> str:
    value = _str(ctx, raw.get("privileges", "none"), "course.privileges")
    if value not in PRIVILEGES:
        raise ctx.fail(f"course.privileges {value!r}: must be one of {', '.join(PRIVILEGES)}")
    if value == "none" and "loopback" not in topologies:
        raise ctx.fail(
            "course.privileges = 'none' but the lab runs only in namespaces: say 'userns' "
            "(root or a user namespace)"
        )
    return value


def _course_states(
    ctx: _Ctx, raw: dict[str, Any], steps: list[Step] | None
) -> tuple[TcpState, ...]:
    value = raw.get("states", [])
    if not isinstance(value, list):
        raise ctx.fail(f"course.states must be an array of state names, not {_type(value)}")
    states: list[TcpState] = []
    for item in value:
        name = _str(ctx, item, "each course state")
        try:
            states.append(TcpState.from_name(name))
        except KeyError:
            names = [s.name for s in TcpState]
            raise ctx.fail(
                f"unknown state {name!r} in course.states{_suggest(name, names)}"
            ) from None
    if steps is None:
        return tuple(states)
    expected = shown_states(steps)
    missing = [s.name for s in expected if s not in states]
    extra = [s.name for s in states if s not in expected]
    if missing or extra:
        parts = [f"the steps expect {', '.join(missing)}"] if missing else []
        parts += [f"no step expects {', '.join(extra)}"] if extra else []
        raise ctx.fail("course.states must list the states the steps expect: " + "; ".join(parts))
    return tuple(states)


def _topologies(ctx: _Ctx, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise ctx.fail("topologies must be a non-empty array, e.g. ['netns']")
    out: list[str] = []
    for item in raw:
        name = _str(ctx, item, "each topology")
        if name not in TOPOLOGIES:
            raise ctx.fail(f"unknown topology {name!r}{_suggest(name, TOPOLOGIES)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def _sysctl_key(ctx: _Ctx, key: object) -> None:
    """The same rule for a lab's ``sysctls`` table and a ``sysctl`` step, checked at load: a
    bad key used to pass until its step ran (then a traceback, after step 1 had run)."""
    if not isinstance(key, str) or not SYSCTL_RE.fullmatch(key):
        raise ctx.fail(
            f"sysctl key {key!r}: only net.ipv4.* and net.core.* keys made of dot-separated "
            "words of a-z, 0-9 and _ are allowed"
        )


def _sysctls(ctx: _Ctx, raw: object) -> dict[str, dict[str, str | int]]:
    if not isinstance(raw, dict):
        raise ctx.fail(
            f"sysctls must be a table {{server = {{...}}, client = {{...}}}}, not {_type(raw)}"
        )
    _unknown_keys(ctx, raw, frozenset({"server", "client"}), "sysctls")
    out: dict[str, dict[str, str | int]] = {}
    base = ctx.at
    for side, table in raw.items():
        _at(ctx, *base, side)
        if not isinstance(table, dict):
            raise ctx.fail(f"sysctls.{side} must be a table of key = value")
        values: dict[str, str | int] = {}
        for key, value in table.items():
            _at(ctx, *base, side, key)
            _sysctl_key(ctx, key)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ctx.fail(f"sysctl {key!r} must be a string or an integer")
            values[key] = value
        out[side] = values
    return out


def _holds(ctx: _Ctx, raw: object, ports: list[str]) -> tuple[Hold, ...]:
    items = raw if isinstance(raw, list) else [raw]
    holds: list[Hold] = []
    for item in items:
        if not isinstance(item, dict):
            raise ctx.fail(
                "hold must be a table like {id = 'h', kind = 'drop_syn', at = 'server'}, "
                f"not {_type(item)}"
            )
        _unknown_keys(ctx, item, HOLD_KEYS, "hold")
        hold_id = _str(ctx, item.get("id", ""), "hold id")
        if not NAME_RE.match(hold_id):
            raise ctx.fail(f"hold id {hold_id!r} must be a short lowercase name")
        kind = _str(ctx, item.get("kind", ""), "hold kind")
        if kind not in HOLD_KINDS:
            raise ctx.fail(f"unknown hold kind {kind!r}{_suggest(kind, HOLD_KINDS)}")
        at = _str(ctx, item.get("at", ""), "hold at")
        if at not in {"server", "client"}:
            raise ctx.fail(f"hold at {at!r}: must be 'server' or 'client' (whose namespace)")
        port = _str(ctx, item.get("port", MAIN_PORT), "hold port")
        if port not in ports:
            raise ctx.fail(f"hold port slot {port!r} is not used by any step")
        count = item.get("count")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ctx.fail("hold count must be a whole number of segments, at least 1")
        if kind == "hold_fin" and count is not None:
            raise ctx.fail("hold_fin holds until released; use drop_fin with a count")
        hook = _str(ctx, item.get("hook", "input"), "hold hook")
        if hook not in {"input", "output"}:
            raise ctx.fail(f"hold hook {hook!r}: must be 'input' or 'output'")
        holds.append(Hold(id=hold_id, kind=kind, at=at, port=port, count=count, hook=hook))
    return tuple(holds)


def _only(ctx: _Ctx, raw: object) -> str | None:
    if raw is None:
        return None
    name = _str(ctx, raw, "only")
    if name not in ONLY:
        raise ctx.fail(f"only {name!r}: must be one of {', '.join(ONLY)}{_suggest(name, ONLY)}")
    return name


def _release(ctx: _Ctx, raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    return tuple(_str(ctx, item, "each released hold id") for item in items)


def _step(
    ctx: _Ctx, raw: object, index: int, clients: list[str], sides: set[str], ports: list[str]
) -> Step:
    if not isinstance(raw, dict):
        raise ctx.fail(f"a step must be a table, not {_type(raw)}")
    base = ctx.at
    sid = raw.get("id", str(index))
    sid = _str(_at(ctx, *base, "id"), sid, "id")
    if not NAME_RE.match(sid):
        raise ctx.fail(f"step id {sid!r} must be lowercase letters, digits, '-' or '_'")
    ctx.step = f"{index} ({sid})"
    _unknown_keys(_at(ctx, *base), raw, STEP_KEYS, "step")
    action = _str(_at(ctx, *base, "action"), raw.get("action", ""), "action")
    if action not in ACTIONS:
        raise ctx.fail(f"unknown action {action!r}{_suggest(action, list(ACTIONS))}")
    spec = ACTIONS[action]
    actor = _str(
        _at(ctx, *base, "actor"), raw.get("actor", "lab" if action == "observe" else ""), "actor"
    )
    role = "client" if actor in clients else actor
    if role not in {"server", "client", "lab"}:
        known = ["server", "lab", *clients]
        if not actor:
            able = (["server"] if "server" in spec.actors else []) + (
                clients if "client" in spec.actors else []
            )
            raise ctx.fail(f"missing actor: say who does {action} ({', '.join(able)})")
        raise ctx.fail(f"unknown actor {actor!r}{_suggest(actor, known)}")
    if role not in spec.actors:
        raise ctx.fail(f"{actor} cannot {action} (only {', '.join(sorted(spec.actors))})")
    args = _args(_at(ctx, *base, "args"), raw.get("args", {}), action, role, clients)
    if action == "sysctl":
        _sysctl_key(_at(ctx, *base, "args", "key"), args["key"])
    expect = _expect(_at(ctx, *base, "expect"), raw.get("expect", {}), sides)
    outcome = raw.get("outcome")
    if outcome is not None:
        outcome = _str(_at(ctx, *base, "outcome"), outcome, "outcome")
        if outcome not in OUTCOMES and outcome not in errno.errorcode.values():
            raise ctx.fail(
                f"unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)} "
                "or an errno name such as ECONNREFUSED"
            )
    data = raw.get("data")
    if data is not None:
        data = _str(_at(ctx, *base, "data"), data, "data")
    facts = raw.get("facts", {})
    _at(ctx, *base, "facts")
    if not isinstance(facts, dict):
        raise ctx.fail(f"facts must be a table, not {_type(facts)}")
    for key, value in facts.items():
        if not isinstance(value, str | int | float | bool):
            raise ctx.fail(f"fact {key!r} must be a string, number or boolean")
        if isinstance(value, str) and value[:1] in "<>=" and not COMPARISON_RE.match(value):
            raise ctx.fail(f"fact {key!r}: comparison {value!r} must look like '>=1'")
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    _at(ctx, *base, "timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ctx.fail(f"timeout must be a number of seconds, not {_type(timeout)}")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise ctx.fail(f"timeout {timeout} must be more than 0 and at most {MAX_TIMEOUT:g} s")
    stay = raw.get("stay", 0.0)
    _at(ctx, *base, "stay")
    if isinstance(stay, bool) or not isinstance(stay, int | float):
        raise ctx.fail(f"stay must be a number of seconds, not {_type(stay)}")
    if not 0 <= stay <= MAX_TIMEOUT:
        raise ctx.fail(f"stay {stay} must be between 0 and {MAX_TIMEOUT:g} s")
    if stay and not expect:
        raise ctx.fail("stay needs an expect table: it keeps checking those states")
    explain = _text(_at(ctx, *base, "explain"), raw.get("explain"), "explain")
    assert explain is not None
    only = _only(_at(ctx, *base, "only"), raw.get("only"))
    holds = _holds(_at(ctx, *base, "hold"), raw["hold"], ports) if "hold" in raw else ()
    release = _release(_at(ctx, *base, "release"), raw["release"]) if "release" in raw else ()
    ctx.at = base
    return Step(
        index=index,
        id=sid,
        actor=actor,
        action=action,
        args=args,
        expect=expect,
        explain=explain,
        outcome=outcome,
        data=data,
        facts=dict(facts),
        timeout=float(timeout),
        stay=float(stay),
        only=only,
        holds=holds,
        release=release,
    )


def _args(
    ctx: _Ctx, raw: object, action: str, role: str, clients: list[str]
) -> dict[str, ArgValue]:
    if not isinstance(raw, dict):
        raise ctx.fail(f"args must be a table, not {_type(raw)}")
    spec = ACTIONS[action]
    base = ctx.at
    _unknown_keys(ctx, raw, frozenset(spec.args), f"{action} argument")
    out: dict[str, ArgValue] = {}
    for key, arg in spec.args.items():
        _at(ctx, *base, key)
        if key not in raw:
            if arg.required:
                raise ctx.fail(f"{action} needs the argument {key!r}")
            if arg.default is not None:
                out[key] = arg.default
            continue
        value = raw[key]
        ok_type = any(
            isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in arg.types
        )
        if not ok_type:
            kinds = " or ".join(_type(t()) for t in arg.types)
            raise ctx.fail(f"{action} argument {key!r} must be {kinds}, not {_type(value)}")
        if arg.choices is not None and value not in arg.choices:
            shown = (str(c).lower() if isinstance(c, bool) else repr(c) for c in arg.choices)
            raise ctx.fail(f"{action} argument {key!r} must be one of {', '.join(shown)}")
        if isinstance(value, int) and not isinstance(value, bool):
            if arg.minimum is not None and value < arg.minimum:
                raise ctx.fail(f"{action} argument {key!r} must be at least {arg.minimum}")
            if arg.maximum is not None and value > arg.maximum:
                raise ctx.fail(f"{action} argument {key!r} must be at most {arg.maximum}")
        if key == "port" and not NAME_RE.match(str(value)):
            raise ctx.fail(f"port slot {value!r} must be a short lowercase name like 'main'")
        out[key] = value
    _at(ctx, *base, "conn")
    if "conn" in out:
        if role != "server":
            if "conn" in raw:
                raise ctx.fail("only the server takes 'conn' (a client acts on its own socket)")
            del out["conn"]
        elif out["conn"] not in clients:
            conn = str(out["conn"])
            raise ctx.fail(
                f"conn {conn!r} is not one of the lab's clients{_suggest(conn, clients)}"
            )
    return out


def _expect(ctx: _Ctx, raw: object, sides: set[str]) -> dict[str, Expected]:
    if not isinstance(raw, dict):
        raise ctx.fail(f"expect must be a table of side = STATE, not {_type(raw)}")
    out: dict[str, Expected] = {}
    base = ctx.at
    for side, value in raw.items():
        _at(ctx, *base, side)
        if side not in sides:
            raise ctx.fail(f"unknown side {side!r}{_suggest(side, sides)}")
        name = _str(ctx, value, f"expect.{side}")
        if name == ABSENT:
            out[side] = None
            continue
        try:
            out[side] = TcpState.from_name(name)
        except KeyError:
            names = [s.name for s in TcpState] + [ABSENT]
            raise ctx.fail(f"unknown state {name!r} for {side}{_suggest(name, names)}") from None
    return out
