"""Names, the per-run registry, and the removal of leftovers.

Why a registry: a lab run creates kernel objects (network namespaces with their veth pair and nft
tables, tracefs instances) that outlive the process if it is killed with SIGKILL or the machine
loses power mid-run. Each run therefore writes down what it is ABOUT to create, with its pid,
before creating it (DESIGN.md point 10). The next run removes what dead owners left behind
(``stale_cleanup``); ``doctor --cleanup`` removes every prefixed leftover (``cleanup_leftovers``).

Naming rule (the one thing that keeps cleanup from ever touching a user's objects):
every object this tool creates is named ``hslab-<run id>-<role>`` where the run id is
``<pid>-<4 hex>``, e.g. ``hslab-4242-a1b2-srv``. nft identifiers cannot contain ``-``, so nft
tables use ``hslab_`` instead (``hslab_4242_a1b2_srv``). A name is ours only if it starts with
``hslab-`` or ``hslab_`` exactly: ``hslab``, ``hslabx`` or ``myhslab-1`` are not ours and are never
removed. veth names must fit IFNAMSIZ (15 characters), so they carry only the 4 hex digits
(``hslab-a1b2-s``); they live and die inside the run's namespaces and are never a leftover on
their own.

Registry file: one JSON file per run, ``<run id>.json``, in ``/run/hslab`` (root) or
``$XDG_RUNTIME_DIR/hslab`` or ``/tmp/hslab-<uid>``; written atomically (temporary file +
rename) so a reader never sees half a file::

    {"format": "hslab-registry/1", "run_id": "4242-a1b2", "pid": 4242,
     "pid_start": 123456, "created": 1700000000.0,
     "objects": [{"kind": "netns", "name": "hslab-4242-a1b2-srv"}, ...]}

``pid_start`` is the owner's start time (field 22 of ``/proc/PID/stat``) so a recycled pid does not
make a dead run look alive.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from handshake_lab import tools
from handshake_lab.errors import NetworkError
from handshake_lab.topo.netns import NETNS_RUN_DIR

PREFIX = "hslab-"
"""Prefix of every namespace, veth and trace instance name this tool creates."""

NFT_PREFIX = "hslab_"
"""Prefix of nft tables (nft identifiers cannot contain ``-``)."""

OWNED_PREFIXES: tuple[str, ...] = (PREFIX, NFT_PREFIX)

FORMAT = "hslab-registry/1"

TRACE_INSTANCE_DIRS: tuple[Path, ...] = (
    Path("/sys/kernel/tracing/instances"),
    Path("/sys/kernel/debug/tracing/instances"),
)
"""Where tracefs may be mounted; instances under either are candidates for cleanup."""

ObjectKind = Literal["netns", "nft_table", "trace_instance", "agent_dir"]
KINDS: frozenset[str] = frozenset({"netns", "nft_table", "trace_instance"})

COMMAND_TIMEOUT = 5.0
"""Seconds any one cleanup command may take: teardown must end even if ``ip`` hangs."""


def is_owned_name(name: str) -> bool:
    """True if ``name`` carries this tool's prefix (``hslab-`` or ``hslab_``) and more."""
    return any(name.startswith(prefix) and len(name) > len(prefix) for prefix in OWNED_PREFIXES)


def new_run_id(pid: int | None = None) -> str:
    """``<pid>-<4 hex>``: the pid says who owns it, the random part tells runs of one pid apart."""
    return f"{os.getpid() if pid is None else pid}-{secrets.token_hex(2)}"


def object_name(run_id: str, role: str) -> str:
    """``hslab-<run id>-<role>``, the name of a namespace or trace instance of this run."""
    if not run_id or not role or "/" in run_id + role:
        raise ValueError(f"bad run id {run_id!r} or role {role!r}")
    return f"{PREFIX}{run_id}-{role}"


def nft_table_name(netns: str) -> str:
    """The nft table this tool uses inside namespace ``netns`` (``-`` becomes ``_``)."""
    if not is_owned_name(netns):
        raise ValueError(f"namespace {netns!r} is not one of ours (no {PREFIX} prefix)")
    return NFT_PREFIX + netns[len(PREFIX) :].replace("-", "_")


def veth_name(run_id: str, side: str) -> str:
    """A veth name within IFNAMSIZ: ``hslab-<4 hex>-<side letter>`` (12 characters)."""
    tail = run_id.rsplit("-", 1)[-1]
    name = f"{PREFIX}{tail}-{side[:1]}"
    if len(name) > 15:
        raise ValueError(f"veth name {name!r} longer than 15 characters")
    return name


def registry_dir() -> Path:
    """Where registry files live: ``/run/hslab`` for root, else a per-user runtime directory."""
    if os.geteuid() == 0:
        return Path("/run/hslab")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "hslab"
    return Path(tempfile.gettempdir()) / f"hslab-{os.getuid()}"


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def owner_alive(pid: int, pid_start: int | None) -> bool:
    """True if process ``pid`` exists and (when known) started at ``pid_start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if pid_start is None:
        return True
    return process_start_time(pid) == pid_start


@dataclass(frozen=True, order=True)
class KernelObject:
    """One kernel object this tool created; ``netns`` is set for objects inside a namespace."""

    kind: ObjectKind
    name: str
    netns: str | None = None

    def __str__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"{self.kind} {self.name}{where}"

    def to_json(self) -> dict[str, str]:
        data = {"kind": self.kind, "name": self.name}
        if self.netns is not None:
            data["netns"] = self.netns
        return data

    @classmethod
    def from_json(cls, data: Any) -> KernelObject:
        if not isinstance(data, dict):
            raise ValueError(f"registry object is not a JSON object: {data!r}")
        kind, name, netns = data.get("kind"), data.get("name"), data.get("netns")
        if kind not in KINDS or not isinstance(name, str) or not is_owned_name(name):
            raise ValueError(f"bad registry object {data!r}")
        if netns is not None and (not isinstance(netns, str) or not is_owned_name(netns)):
            raise ValueError(f"bad registry object {data!r}")
        obj_kind: ObjectKind = kind
        return cls(kind=obj_kind, name=name, netns=netns)


@dataclass(frozen=True)
class RegistryEntry:
    """The parsed contents of one registry file."""

    path: Path
    run_id: str
    pid: int
    pid_start: int | None
    created: float
    objects: tuple[KernelObject, ...]

    def owner_alive(self) -> bool:
        return owner_alive(self.pid, self.pid_start)


def parse_registry(text: str, path: Path) -> RegistryEntry:
    """Parse one registry file's text; ``ValueError`` if it is not one of ours."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    run_id, pid, pid_start = data.get("run_id"), data.get("pid"), data.get("pid_start")
    created, objects = data.get("created", 0.0), data.get("objects", [])
    if not isinstance(run_id, str) or not isinstance(pid, int) or not isinstance(objects, list):
        raise ValueError(f"{path}: missing run_id, pid or objects")
    if pid_start is not None and not isinstance(pid_start, int):
        raise ValueError(f"{path}: bad pid_start")
    if not isinstance(created, int | float):
        raise ValueError(f"{path}: bad created")
    return RegistryEntry(
        path=path,
        run_id=run_id,
        pid=pid,
        pid_start=pid_start,
        created=float(created),
        objects=tuple(KernelObject.from_json(obj) for obj in objects),
    )


def read_registries(directory: Path | None = None) -> Iterator[RegistryEntry]:
    """Every readable registry file in ``directory``; unreadable or foreign files are skipped."""
    base = registry_dir() if directory is None else directory
    try:
        paths = sorted(base.glob("*.json"))
    except OSError:
        return
    for path in paths:
        try:
            yield parse_registry(path.read_text(), path)
        except (OSError, ValueError):
            continue


class RunRegistry:
    """The registry file of one run: record before creating, forget after removing.

    The file is rewritten atomically on every change, so after a SIGKILL it lists at least every
    object that might exist (perhaps one that was recorded but never created: removing a missing
    object is a no-op).
    """

    def __init__(self, run_id: str, directory: Path | None = None) -> None:
        self.run_id = run_id
        self.directory = registry_dir() if directory is None else directory
        self.path = self.directory / f"{run_id}.json"
        self.pid = os.getpid()
        self.pid_start = process_start_time(self.pid)
        self.created = time.time()
        self._objects: list[KernelObject] = []

    @property
    def objects(self) -> tuple[KernelObject, ...]:
        return tuple(self._objects)

    def _merged(self) -> list[KernelObject]:
        """Our objects plus those another instance of the same run wrote (a run's namespace
        pair and its trace instance each hold one): the file is the run's one record, so
        neither may overwrite the other's objects."""
        merged = list(self._objects)
        try:
            entry = parse_registry(self.path.read_text(), self.path)
        except (OSError, ValueError):
            return merged
        if entry.run_id == self.run_id:
            merged += [obj for obj in entry.objects if obj not in merged]
        return merged

    def record(self, *objects: KernelObject) -> None:
        """Write ``objects`` down (durably) before the caller creates them."""
        self._objects = self._merged()
        for obj in objects:
            if not is_owned_name(obj.name):
                raise ValueError(f"refusing to record {obj}: no {PREFIX} prefix")
            if obj not in self._objects:
                self._objects.append(obj)
        self._write()

    def forget(self, *objects: KernelObject) -> None:
        """Drop ``objects`` once they are gone; the file goes when nothing is left."""
        self._objects = [obj for obj in self._merged() if obj not in objects]
        if self._objects:
            self._write()
        else:
            self.remove_file()

    def remove_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _write(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {
            "format": FORMAT,
            "run_id": self.run_id,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "created": self.created,
            "objects": [obj.to_json() for obj in self._objects],
        }
        tmp = self.directory / f".{self.run_id}.json.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


# --- removal ---------------------------------------------------------------------------------


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [tools.command(argv[0]), *argv[1:]]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except FileNotFoundError as error:
        raise NetworkError(tools.missing(Path(argv[0]).name)) from error
    except subprocess.TimeoutExpired as error:
        raise NetworkError(f"{' '.join(argv)} did not finish in {COMMAND_TIMEOUT:g} s") from error


def netns_exists(name: str) -> bool:
    return (NETNS_RUN_DIR / name).exists()


def remove_netns(name: str) -> bool:
    """Delete namespace ``name`` (ours only); True if it existed. Idempotent.

    Deleting the namespace also destroys the veth pair and nft tables inside it. Sockets this
    process still holds keep the (now nameless) namespace alive until they close.
    """
    if not is_owned_name(name):
        raise ValueError(f"refusing to delete netns {name!r}: no {PREFIX} prefix")
    if not netns_exists(name):
        return False
    done = _run(["ip", "netns", "delete", name])
    if done.returncode != 0 and netns_exists(name):
        raise NetworkError(f"ip netns delete {name} failed: {done.stderr.strip()}")
    return True


def remove_nft_table(name: str, netns: str) -> bool:
    """Delete ``inet`` table ``name`` inside ``netns`` (never the host's); True if removed."""
    if not (is_owned_name(name) and is_owned_name(netns)):
        raise ValueError(f"refusing to delete nft table {name!r} in {netns!r}: not ours")
    if not netns_exists(netns):
        return False
    nft = tools.command("nft")
    done = _run(["ip", "netns", "exec", netns, nft, "delete", "table", "inet", name])
    return done.returncode == 0


def trace_instances() -> list[Path]:
    """Prefixed tracefs instances (created by the tracepoint observer), in every mount."""
    found: list[Path] = []
    for base in TRACE_INSTANCE_DIRS:
        try:
            found.extend(entry for entry in sorted(base.iterdir()) if is_owned_name(entry.name))
        except OSError:
            continue
    return found


def remove_trace_instance(name: str) -> bool:
    """``rmdir`` the instance ``name`` wherever tracefs is mounted; True if one was removed."""
    if not is_owned_name(name):
        raise ValueError(f"refusing to remove trace instance {name!r}: no {PREFIX} prefix")
    removed = False
    for base in TRACE_INSTANCE_DIRS:
        try:
            (base / name).rmdir()
            removed = True
        except OSError as error:
            # ENOENT/ENODEV: gone (or going) already. EBUSY: a reader has it open, so it is
            # in use by a live tracer, not a leftover: leave it.
            if error.errno in {errno.ENOENT, errno.ENODEV, errno.EBUSY}:
                continue
            raise NetworkError(f"cannot remove trace instance {name}: {error.strerror}") from error
    return removed


AGENT_DIR_PREFIX = "hslab-agent-"
"""``<tmp>/hslab-agent-<pid>-<random>``: a netns-agent run's token directory (placement.build).
Removed by the run itself; after a SIGKILL by ``doctor --cleanup`` once its pid is gone."""


def agent_dirs() -> list[Path]:
    """This user's netns-agent token directories in the temporary directory."""
    base = Path(tempfile.gettempdir())
    found = []
    for path in base.glob(f"{AGENT_DIR_PREFIX}*"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
                found.append(path)
    return found


def _remove_agent_dir(name: str) -> bool:
    path = Path(tempfile.gettempdir()) / name
    if not name.startswith(AGENT_DIR_PREFIX) or "/" in name or not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def remove_object(obj: KernelObject) -> bool:
    """Remove one recorded object; True if something was there to remove."""
    if obj.kind == "agent_dir":
        return _remove_agent_dir(obj.name)
    if obj.kind == "netns":
        return remove_netns(obj.name)
    if obj.kind == "nft_table":
        return obj.netns is not None and remove_nft_table(obj.name, obj.netns)
    return remove_trace_instance(obj.name)


def _exists(obj: KernelObject) -> bool:
    if obj.kind == "agent_dir":
        return (Path(tempfile.gettempdir()) / obj.name).is_dir()
    if obj.kind == "netns":
        return netns_exists(obj.name)
    if obj.kind == "nft_table":
        return obj.netns is not None and netns_exists(obj.netns)
    return any((base / obj.name).exists() for base in TRACE_INSTANCE_DIRS)


class CleanupError(NetworkError):
    """Some leftovers could not be removed; ``removed`` lists those that were."""

    def __init__(self, removed: list[KernelObject], failed: list[tuple[KernelObject, str]]):
        self.removed = removed
        self.failed = failed
        detail = "; ".join(f"{obj}: {why}" for obj, why in failed)
        super().__init__(f"could not remove {len(failed)} leftover(s): {detail}")


def _remove_all(objects: Iterable[KernelObject], dry_run: bool) -> list[KernelObject]:
    """Remove ``objects`` (trace instances, tables, then namespaces); report what went."""
    removed: list[KernelObject] = []
    failed: list[tuple[KernelObject, str]] = []
    order = {"trace_instance": 0, "nft_table": 1, "netns": 2, "agent_dir": 3}
    for obj in sorted(set(objects), key=lambda o: (order[o.kind], o.name)):
        if obj.kind == "nft_table":
            continue  # removed with its namespace, which is ours too
        if dry_run:
            if _exists(obj):
                removed.append(obj)
            continue
        try:
            if remove_object(obj):
                removed.append(obj)
        except (NetworkError, ValueError) as error:
            failed.append((obj, str(error)))
    if failed:
        raise CleanupError(removed, failed)
    return removed


def stale_cleanup(directory: Path | None = None) -> list[KernelObject]:
    """Remove what runs whose owner process is dead left behind; return what was removed.

    Only objects listed in a dead run's registry file are touched, so a concurrent live run is
    never disturbed. Each handled registry file is deleted; a file whose objects could not all
    be removed is kept for the next attempt, and ``CleanupError`` (carrying ``removed``) is
    raised after every run was tried.
    """
    removed: list[KernelObject] = []
    failed: list[tuple[KernelObject, str]] = []
    for entry in read_registries(directory):
        if entry.owner_alive():
            continue
        try:
            removed.extend(_remove_all(entry.objects, dry_run=False))
        except CleanupError as error:
            # Keep this file (the next run retries it) and go on with the other runs.
            removed.extend(error.removed)
            failed.extend(error.failed)
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
    if failed:
        raise CleanupError(removed, failed)
    return removed


def list_netns() -> list[str]:
    """Names of prefixed namespaces under ``/run/netns``."""
    try:
        return sorted(entry.name for entry in NETNS_RUN_DIR.iterdir() if is_owned_name(entry.name))
    except OSError:
        return []


def filter_owned(names: Iterable[str]) -> list[str]:
    """The names that carry our prefix; everything else is the user's and is never touched."""
    return sorted(name for name in names if is_owned_name(name))


def named_after_live_pid(name: str) -> bool:
    """True if a dash-separated part of ``name`` is the pid of a running process.

    Our names carry the creator's pid (``hslab-<pid>-<hex>-srv``, ``hslab-bench-<pid>``). A
    registry records them before creation, but a name is the last line of defence: an object
    whose creator is still running is never a leftover, recorded or not. (A reused pid keeps an
    object a little longer; it is removed once that pid is gone.)
    """
    for part in name.split("-")[1:]:
        if part.isdigit() and 0 < int(part) < 2**22:
            with contextlib.suppress(OSError):
                os.kill(int(part), 0)
                return True
            if Path(f"/proc/{part}").exists():
                return True
    return False


def cleanup_leftovers(
    dry_run: bool,
    *,
    include_live: bool = False,
    directory: Path | None = None,
    kinds: Collection[str] = ("netns", "trace_instance", "agent_dir"),
    pid: int | None = None,
) -> list[KernelObject]:
    """Remove (or with ``dry_run`` only list) every prefixed leftover; return the list.

    Covers every network namespace named ``hslab-*`` / ``hslab_*`` under ``/run/netns`` (their
    veths and nft tables go with them) and every tracefs instance so named. Objects recorded by
    a run whose owner is still alive are spared unless ``include_live`` (a concurrent lab is
    not a leftover); so is a trace instance a reader holds open (``rmdir`` says EBUSY).
    ``kinds`` narrows the sweep; ``pid`` narrows it to one run's objects and registry files
    (``hslab-<pid>-...``, ``<pid>-*.json``), so one run, or one test, never sweeps another's
    leftovers while their owner is about to look at them. Registry files of dead owners are
    deleted. Nothing without the
    prefix is ever listed or removed.

    Objects that another part of the tool creates WITHOUT recording them (a trace instance not
    in any registry) are only protected by EBUSY: record them to be safe from a concurrent
    ``doctor --cleanup``.
    """
    entries = list(read_registries(directory))
    if pid is not None:
        entries = [e for e in entries if e.run_id.startswith(f"{pid}-")]
    live: set[KernelObject] = set()
    if not include_live:
        for entry in entries:
            if entry.owner_alive():
                live.update(entry.objects)
    candidates: list[KernelObject] = []
    if "netns" in kinds:
        candidates += [KernelObject("netns", name) for name in list_netns()]
    if "trace_instance" in kinds:
        candidates += [KernelObject("trace_instance", path.name) for path in trace_instances()]
    if "agent_dir" in kinds:
        # Never recorded (the token must not sit in the registry): the pid in the name says
        # whether its run is alive, as for other unrecorded objects.
        candidates += [KernelObject("agent_dir", path.name) for path in agent_dirs()]
    # A recorded object's owner is known exactly (pid and start time): if it is dead the
    # object is a leftover, whatever process holds that pid now (pids wrap: pid_max is often
    # 32768). Only unrecorded objects fall back on the pid in their name.
    recorded = {obj for entry in entries for obj in entry.objects}
    if pid is not None:
        mine = (f"{PREFIX}{pid}-", f"{NFT_PREFIX}{pid}_", f"{AGENT_DIR_PREFIX}{pid}-")
        candidates = [obj for obj in candidates if obj.name.startswith(mine)]
    chosen = [
        obj
        for obj in candidates
        if obj not in live
        and (include_live or obj in recorded or not named_after_live_pid(obj.name))
    ]
    removed = _remove_all(chosen, dry_run)
    if not dry_run:
        for entry in entries:
            if include_live or not entry.owner_alive():
                with contextlib.suppress(FileNotFoundError):
                    entry.path.unlink()
    return removed


__all__ = [
    "FORMAT",
    "NFT_PREFIX",
    "OWNED_PREFIXES",
    "PREFIX",
    "CleanupError",
    "KernelObject",
    "RegistryEntry",
    "RunRegistry",
    "cleanup_leftovers",
    "filter_owned",
    "is_owned_name",
    "list_netns",
    "new_run_id",
    "nft_table_name",
    "object_name",
    "owner_alive",
    "parse_registry",
    "process_start_time",
    "read_registries",
    "registry_dir",
    "remove_netns",
    "remove_object",
    "remove_trace_instance",
    "stale_cleanup",
    "trace_instances",
    "veth_name",
]
