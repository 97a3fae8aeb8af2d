"""Holds, sysctls and counters inside a lab VM's own network namespace (``run --peer``).

Everywhere else the rule stands: the tool never touches the network configuration of the
machine it runs on; holds and sysctls live only in namespaces it made (``topo.pair``). The two
lab VMs are the one exception, because they exist for the lab and nothing else: a VM that
``vagrant/provision.sh`` provisioned carries the marker file ``MARKER`` (root-owned, in a
root-owned directory, not writable by anyone else, first line ``MARKER_TEXT``). Only there, and
only as root, may the agent (server VM) and the client (client VM) do what a lab step needs in
the VM's own namespace:

- an nft table ``hslab_vm_<pid>_<hex>`` (``table_name``) holding the step's hold chains, built
  with the very script ``topo.nft`` uses in lab namespaces. It exists only while a hold is
  active: releasing the last active hold deletes it (the final counts are read first and kept,
  so later steps still report them), and the end of the lab session deletes it whatever ended
  the session (the runner's cleanup on error, Ctrl-C, SIGTERM; the agent's session cleanup when
  a client vanishes);
- sysctls (``net.*`` only): the old value is saved before the first write and restored when
  the session ends;
- TCP counters reported as differences since the session began, so "this lab's overflows"
  means what it says even though the VM's namespace is not fresh.

What a session is about to change is written first to ``STATE_DIR/vm-<pid>_<hex>.json`` (table
name, original sysctl values), so a process killed with SIGKILL is cleaned up by the next
session on that VM (``stale_cleanup``): its table is deleted and its sysctls restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from handshake_lab.errors import MissingDependencyError, NetworkError
from handshake_lab.spec.model import Step
from handshake_lab.topo.nft import MISSING_NFT, NFT_TIMEOUT, HoldKind, counter_packets, hold_script
from handshake_lab.topo.pair import read_tcp_counters, sysctl_path
from handshake_lab.topo.registry import NFT_PREFIX

MARKER = Path("/etc/handshake-lab/provisioned-vm")
MARKER_TEXT = "handshake-lab lab VM, provisioned by vagrant/provision.sh"
TABLE_PREFIX = f"{NFT_PREFIX}vm_"
STATE_DIR = Path("/run/handshake-lab")
SBIN_DIRS = ("/usr/sbin", "/sbin")
MAX_RELEASE_WAIT = 5.0
"""The longest a release at an instant waits for it (seconds)."""


def marker_problem(marker: Path = MARKER) -> str | None:
    """Why ``marker`` does not prove a provisioned lab VM, or None when it does.

    A file anyone could create proves nothing: it and every directory above it must belong to
    root and be writable by root alone (or be sticky, like /tmp), and its first line must be
    ``MARKER_TEXT``.
    """
    try:
        info = os.lstat(marker)
    except FileNotFoundError:
        return f"{marker} is missing"
    except OSError as error:
        return f"cannot read {marker}: {error.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{marker} is not a regular file"
    for path in (marker, *marker.parents):
        st = os.lstat(path)
        # A sticky directory (/tmp) is fine above the file: nobody can rename root's entries.
        shared = path != marker and st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not shared):
            return f"{path} must belong to root and be writable by root alone"
    try:
        first = marker.read_text(encoding="utf-8", errors="replace").partition("\n")[0]
    except OSError as error:
        return f"cannot read {marker}: {error.strerror}"
    if first.strip() != MARKER_TEXT:
        return f"{marker} does not start with the provisioning line"
    return None


def vm_holds_allowed(marker: Path = MARKER, euid: int | None = None) -> bool:
    """True on a provisioned lab VM, as root: there the VM's own namespace may be changed."""
    return (os.geteuid() if euid is None else euid) == 0 and marker_problem(marker) is None


def refusal(marker: Path = MARKER) -> str:
    """The one line that says why holds across ``--peer`` are not allowed here."""
    problem = marker_problem(marker)
    if problem is None and os.geteuid() != 0:
        problem = "they need root (hslab-peer-run uses sudo)"
    return f"holds across --peer need the two VMs vagrant/provision.sh provisioned; here {problem}"


def table_name(pid: int | None = None) -> str:
    """``hslab_vm_<pid>_<4 hex>``: the pid says whose table it is (see ``stale_cleanup``)."""
    return f"{TABLE_PREFIX}{os.getpid() if pid is None else pid}_{secrets.token_hex(2)}"


def _owner_pid(table: str) -> int | None:
    if not table.startswith(TABLE_PREFIX):
        return None
    head = table[len(TABLE_PREFIX) :].split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_tool(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin, /sbin (not on a plain Debian user's PATH)."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def nft_here(args: list[str], stdin: str | None = None) -> str:
    """Run ``nft ARGS`` in this process's namespace; every failure becomes ``NetworkError``."""
    nft = find_tool("nft")
    if nft is None:
        raise MissingDependencyError(MISSING_NFT)
    try:
        done = subprocess.run(
            [nft, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise NetworkError(f"nft did not finish in {NFT_TIMEOUT:g} s") from error
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise NetworkError(f"nft {' '.join(args)} failed: {detail[0] if detail else '?'}")
    return done.stdout


def vm_tables(listing: str) -> list[str]:
    """Names of this tool's VM tables in ``nft -j list tables`` output (pure)."""
    names = []
    for item in json.loads(listing).get("nftables", []):
        table = item.get("table") if isinstance(item, dict) else None
        if isinstance(table, dict) and table.get("family") == "inet":
            name = str(table.get("name", ""))
            if name.startswith(TABLE_PREFIX):
                names.append(name)
    return names


def _read_sysctl(key: str) -> str:
    return " ".join(sysctl_path(key).read_text().split())


def _write_sysctl(key: str, value: str) -> None:
    try:
        sysctl_path(key).write_text(value + "\n")
    except OSError as error:
        raise NetworkError(f"cannot set {key}={value}: {error.strerror}") from error


def stale_cleanup(state_dir: Path = STATE_DIR) -> list[str]:
    """Undo what sessions killed with SIGKILL left here: their tables, their sysctls."""
    done: list[str] = []
    for record in sorted(state_dir.glob("vm-*.json")):
        pid_text = record.stem.removeprefix("vm-").split("_", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            state = json.loads(record.read_text())
        except (OSError, ValueError):
            state = {}
        for key, value in dict(state.get("sysctls", {})).items():
            try:
                _write_sysctl(str(key), str(value))
                done.append(f"sysctl {key}={value}")
            except (NetworkError, ValueError):
                pass
        record.unlink(missing_ok=True)
    try:
        listing = nft_here(["-j", "list", "tables"])
    except (NetworkError, MissingDependencyError):
        return done
    for table in vm_tables(listing):
        pid = _owner_pid(table)
        if pid is not None and not _alive(pid):
            try:
                nft_here(["delete", "table", "inet", table])
                done.append(f"table {table}")
            except NetworkError:
                pass
    return done


class VmOps:
    """One lab session's changes to this VM's own namespace (``NamespaceOps``'s VM path).

    ``run`` takes the same operations as ``net.sides.NamespaceOps`` (``add_hold``,
    ``release_hold``, ``dropped``, ``sysctl``, ``counters``); ``close`` undoes everything and
    may be called any number of times.
    """

    def __init__(self, marker: Path = MARKER, state_dir: Path = STATE_DIR) -> None:
        problem = marker_problem(marker)
        if problem is not None:
            raise MissingDependencyError(refusal(marker))
        self.state_dir = state_dir
        self.table = table_name()
        self.state_file = state_dir / f"vm-{self.table.removeprefix(TABLE_PREFIX)}.json"
        self.table_made = False
        self.active: dict[str, str] = {}  # hold id -> chain, while it drops
        self.final: dict[str, int] = {}  # hold id -> count read when it was released
        self.saved: dict[str, str] = {}  # sysctl key -> value before this session
        self.closed = False
        self.cleaned = stale_cleanup(state_dir)
        self.baseline = read_tcp_counters()

    # -- the record written before any change ---------------------------------------------

    def _record(self) -> None:
        self.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"table": self.table, "sysctls": self.saved}))
        tmp.replace(self.state_file)

    # -- operations -------------------------------------------------------------------------

    def run(self, op: str, args: Mapping[str, object]) -> object:
        if self.closed:
            return None
        if op == "add_hold":
            self._add_hold(args)
            return None
        if op == "release_hold":
            at = args.get("at")
            if at is not None:
                # Released at an instant (``nft.release``): this VM's own clock decides; the
                # wait is bounded, so a clock far off cannot hold the lab.
                time.sleep(min(max(0.0, int(str(at)) - time.time()), MAX_RELEASE_WAIT))
            self._release(str(args["id"]))
            return None
        if op == "dropped":
            return self._dropped(str(args["id"]))
        if op == "sysctl":
            self._sysctl(str(args["key"]), args["value"])
            return None
        if op == "counters":
            now = read_tcp_counters()
            return {k: v - self.baseline.get(k, 0) for k, v in now.items()}
        raise ValueError(f"unknown namespace operation {op!r}")

    def _add_hold(self, args: Mapping[str, object]) -> None:
        hold_id = str(args["id"])
        count = args.get("count")
        chain = f"h_{secrets.token_hex(3)}"
        script = hold_script(
            self.table,
            chain,
            HoldKind(str(args["kind"])),
            int(str(args["port"])),
            int(str(count)) if count is not None else None,
            "output" if args.get("hook") == "output" else "input",
        )
        if not self.table_made:
            self._record()
        nft_here(["-f", "-"], stdin=script)
        self.table_made = True
        self.active[hold_id] = chain

    def _count(self, chain: str) -> int:
        text = nft_here(["-j", "list", "counter", "inet", self.table, chain])
        return counter_packets(text, chain, "this VM")

    def _release(self, hold_id: str) -> None:
        chain = self.active.pop(hold_id, None)
        if chain is None:
            return
        self.final[hold_id] = self._count(chain)
        if self.active:
            nft_here(["flush", "chain", "inet", self.table, chain])
        else:
            self._drop_table()

    def _dropped(self, hold_id: str) -> int:
        chain = self.active.get(hold_id)
        if chain is not None:
            return self._count(chain)
        if hold_id in self.final:
            return self.final[hold_id]
        raise NetworkError(f"no hold {hold_id!r} in this session")

    def _sysctl(self, key: str, value: object) -> None:
        text = " ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        if key not in self.saved:
            self.saved[key] = _read_sysctl(key)
            self._record()
        _write_sysctl(key, text)

    def _drop_table(self) -> None:
        if self.table_made:
            nft_here(["delete", "table", "inet", self.table])
            self.table_made = False

    def close(self) -> None:
        """Delete the table, restore the sysctls, forget the record. Never raises."""
        if self.closed:
            return
        self.closed = True
        for hold_id, chain in list(self.active.items()):
            with contextlib.suppress(NetworkError, MissingDependencyError):
                self.final[hold_id] = self._count(chain)
        self.active.clear()
        with contextlib.suppress(NetworkError, MissingDependencyError):
            self._drop_table()
        for key, value in reversed(list(self.saved.items())):
            with contextlib.suppress(NetworkError):
                _write_sysctl(key, value)
        self.state_file.unlink(missing_ok=True)


def vm_ops_here(marker: Path = MARKER) -> VmOps | None:
    """A session's ``VmOps`` on a provisioned lab VM as root, else None (the host rule)."""
    return VmOps(marker) if vm_holds_allowed(marker) else None


def lab_needs_vm_ops(steps: Sequence[Step], sysctls: Mapping[str, object]) -> bool:
    """Does a step set change a namespace (holds, sysctl steps, lab sysctls)?"""
    return bool(sysctls) or any(
        step.holds or step.release or step.action == "sysctl" for step in steps
    )


__all__ = [
    "MARKER",
    "MARKER_TEXT",
    "TABLE_PREFIX",
    "VmOps",
    "find_tool",
    "lab_needs_vm_ops",
    "marker_problem",
    "refusal",
    "stale_cleanup",
    "table_name",
    "vm_holds_allowed",
    "vm_ops_here",
    "vm_tables",
]
