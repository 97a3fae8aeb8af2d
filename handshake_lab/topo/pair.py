"""Two "hosts" on one machine: a server and a client network namespace joined by a veth pair.

Why: on loopback both ends share one socket table and one set of sysctls, segments cross in
microseconds, and nft rules would hit the host. In a pair of namespaces each end has its own
socket table (so ``ss`` in one namespace shows one side only), its own sysctls
(``tcp_synack_retries``, ``ip_local_port_range``, ``tcp_tw_reuse``... set per namespace, never on
the host) and its own nftables, and the traffic never leaves the two namespaces.

Layout (addresses from the benchmarking range 198.18.0.0/15, never a real LAN)::

    netns hslab-<run>-srv               netns hslab-<run>-cli
      lo up                               lo up
      hslab-<hex>-s 198.18.0.1/24 <-veth-> hslab-<hex>-c 198.18.0.2/24

With ``ip=6`` the veth ends get 2001:db8:198:18::1/64 and ::2/64 instead: the documentation
prefix (RFC 3849), which no network is ever assigned, so unlike a ULA (fd00::/8, which home
routers hand out) it cannot coincide with a LAN this machine is on; and it never leaves our
namespaces anyway. They are added ``nodad``: usable at once, no 1-2 s of duplicate address
detection (the link-local addresses the kernel adds itself still run DAD; the lab never uses
them). With ``ip=DUAL_STACK`` (a lab of both families, ``ip = "dual"``) each veth end gets
both: 198.18.0.x/24 and 2001:db8:198:18::x/64.

The veth ends are created directly inside the namespaces (``ip link add A netns S type veth
peer name B netns C``), so no interface ever exists in the host namespace, not even briefly.
Both namespaces are recorded in the run's registry before they are created. Concurrent runs use
the same addresses in different namespaces, which cannot collide.

Cost: three ``ip`` processes to build (one ``ip -batch`` in the host for the namespaces and veth,
one ``ip -n NS -batch`` per side for addresses and links), sysctls written in-process through
``/proc/sys`` after ``setns``, one ``ip -batch`` to tear down.

Teardown (``close``) is idempotent, bounded (every command has a timeout) and cannot be
interrupted half-way: it is synchronous (no ``await``, so task cancellation cannot cut it) and a
``KeyboardInterrupt`` arriving during it is held until every step ran, then re-raised.
Whatever a SIGKILL leaves is removed by the next run's ``stale_cleanup`` or by
``doctor --cleanup``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Self

from handshake_lab import tools
from handshake_lab.errors import MissingDependencyError, NetworkError
from handshake_lab.signals import raise_if_interrupted
from handshake_lab.spec.model import DUAL_STACK
from handshake_lab.topo.netns import in_netns, netns_path
from handshake_lab.topo.registry import (
    COMMAND_TIMEOUT,
    KernelObject,
    RunRegistry,
    is_owned_name,
    netns_exists,
    new_run_id,
    object_name,
    veth_name,
)

SERVER_ADDR = "198.18.0.1"
CLIENT_ADDR = "198.18.0.2"
PREFIX_LEN = 24
SERVER_ADDR6 = "2001:db8:198:18::1"
CLIENT_ADDR6 = "2001:db8:198:18::2"
PREFIX_LEN6 = 64

SysctlValue = str | int | tuple[int, int]


def sysctl_path(key: str) -> Path:
    """``net.ipv4.tcp_tw_reuse`` -> ``/proc/sys/net/ipv4/tcp_tw_reuse``; only ``net.*`` keys.

    Only ``net.*`` keys are accepted: they are the per-namespace ones. The kernel registers the
    few global ``net.*`` tables (``tcp_mem``, ``core.rmem_max``...) in the initial namespace only,
    so a write inside a lab namespace cannot reach a host-wide value.
    """
    parts = key.split(".")
    if parts[0] != "net" or len(parts) < 3 or any(not p or p in {".", ".."} for p in parts):
        raise ValueError(f"sysctl {key!r} is not a per-namespace net.* key")
    if any("/" in part for part in parts):
        raise ValueError(f"bad sysctl key {key!r}")
    return Path("/proc/sys", *parts)


def _format_value(value: SysctlValue) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _is_host_netns(name: str) -> bool:
    """True if ``name`` is (a bind mount of) the host's own namespace: never write there."""
    try:
        target = os.stat(netns_path(name))
        host = os.stat("/proc/1/ns/net")
    except OSError:
        return False
    return (target.st_dev, target.st_ino) == (host.st_dev, host.st_ino)


def set_sysctl(ns: str, key: str, value: SysctlValue) -> None:
    """Write sysctl ``key`` inside namespace ``ns`` (one of ours), never on the host.

    The write goes through ``/proc/sys`` from a thread that entered ``ns``: network sysctls
    resolve against the namespace of the thread that opens the file. No process is spawned.
    """
    if not is_owned_name(ns):
        raise ValueError(f"refusing to set sysctls in namespace {ns!r}: not one of ours")
    path = sysctl_path(key)
    text = _format_value(value)
    if _is_host_netns(ns):
        raise NetworkError(f"namespace {ns} is the host's own namespace: refusing to set {key}")
    with in_netns(ns):
        try:
            path.write_text(text + "\n")
        except FileNotFoundError as error:
            raise NetworkError(f"sysctl {key} does not exist in a network namespace") from error
        except OSError as error:
            raise NetworkError(f"cannot set {key}={text} in {ns}: {error.strerror}") from error


def get_sysctl(ns: str, key: str) -> str:
    """Read sysctl ``key`` inside namespace ``ns`` (whitespace collapsed: ``"40000 40009"``)."""
    with in_netns(ns):
        try:
            return " ".join(sysctl_path(key).read_text().split())
        except OSError as error:
            raise NetworkError(f"cannot read {key} in {ns}: {error.strerror}") from error


def read_sysctls(keys: Iterable[str], ns: str | None = None) -> dict[str, str | None]:
    """The values of ``keys`` (``net.*``) as this run's sockets see them: in namespace ``ns``,
    or the host's when None. Read-only; a key this kernel lacks (or cannot read) is None."""

    def read() -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for key in keys:
            try:
                out[key] = " ".join(sysctl_path(key).read_text().split())
            except (OSError, ValueError):
                out[key] = None
        return out

    if ns is None:
        return read()
    with in_netns(ns):
        return read()


def read_tcp_counters() -> dict[str, int]:
    """The calling thread's namespace's TCP counters (``/proc/thread-self/net/{snmp,netstat}``).

    ``thread-self`` matters: ``/proc/net`` follows the main thread's namespace (see
    ``observe.scoped``). Keys are ``Group.Name``, e.g. ``TcpExt.ListenOverflows``.
    """
    counters: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        with open(f"/proc/thread-self/net/{name}", encoding="ascii") as fh:
            lines = fh.read().splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            group, _, names = header.partition(":")
            if not group.startswith("Tcp"):
                continue
            for key, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
                counters[f"{group}.{key}"] = int(value)
    return counters


def _ip(args: list[str], script: str) -> None:
    """Run ``ip ARGS -batch -`` with ``script`` on stdin; one process for many commands."""
    argv = [tools.command("ip"), *args, "-batch", "-"]
    try:
        done = subprocess.run(
            argv,
            input=script,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as error:
        raise MissingDependencyError(tools.missing("ip")) from error
    except subprocess.TimeoutExpired as error:
        raise NetworkError(f"ip did not finish in {COMMAND_TIMEOUT:g} s") from error
    if done.returncode != 0:
        raise_if_interrupted(done.returncode, "ip")
        lines = done.stderr.strip().splitlines()
        raise NetworkError(f"ip {' '.join(args)} -batch failed: {' | '.join(lines[-2:])}")


class NetnsPair(AbstractContextManager["NetnsPair"]):
    """A server and a client namespace joined by a veth pair; see the module docstring.

    Use ``with NetnsPair() as pair:`` or ``async with NetnsPair() as pair:``, or call ``create``
    and ``close`` yourself (``close`` is safe to call any number of times, also after a failed
    ``create``). ``sysctls`` are applied to both namespaces; ``server_sysctls`` and
    ``client_sysctls`` to one side.
    """

    def __init__(
        self,
        *,
        run_id: str | None = None,
        sysctls: Mapping[str, SysctlValue] | None = None,
        server_sysctls: Mapping[str, SysctlValue] | None = None,
        client_sysctls: Mapping[str, SysctlValue] | None = None,
        registry_dir: Path | None = None,
        ip: int = 4,
    ) -> None:
        if ip not in (4, 6, DUAL_STACK):
            raise ValueError(f"IP version must be 4, 6 or {DUAL_STACK} (both), not {ip!r}")
        self.ip = ip
        self.run_id = run_id or new_run_id()
        self.server_ns = object_name(self.run_id, "srv")
        self.client_ns = object_name(self.run_id, "cli")
        self.server_veth = veth_name(self.run_id, "s")
        self.client_veth = veth_name(self.run_id, "c")
        self.server_addr = SERVER_ADDR6 if ip == 6 else SERVER_ADDR
        self.client_addr = CLIENT_ADDR6 if ip == 6 else CLIENT_ADDR
        self.prefix_len = PREFIX_LEN6 if ip == 6 else PREFIX_LEN
        # Both families (a dual-stack lab): the IPv4 addresses above, and these as well.
        self.server_addr6 = SERVER_ADDR6 if ip == DUAL_STACK else None
        self.client_addr6 = CLIENT_ADDR6 if ip == DUAL_STACK else None
        self._sysctls = {
            self.server_ns: {**(sysctls or {}), **(server_sysctls or {})},
            self.client_ns: {**(sysctls or {}), **(client_sysctls or {})},
        }
        self.registry = RunRegistry(self.run_id, registry_dir)
        self._objects = (
            KernelObject("netns", self.server_ns),
            KernelObject("netns", self.client_ns),
        )
        self.created = False

    @property
    def namespaces(self) -> tuple[str, str]:
        """(server, client)."""
        return self.server_ns, self.client_ns

    def create(self) -> Self:
        """Record, then build both namespaces, the veth pair, addresses and sysctls.

        On any failure the partial pair is torn down before the error propagates.
        """
        if self.created:
            return self
        self.registry.record(*self._objects)
        self.created = True
        try:
            _ip(
                [],
                f"netns add {self.server_ns}\n"
                f"netns add {self.client_ns}\n"
                f"link add {self.server_veth} netns {self.server_ns} type veth "
                f"peer name {self.client_veth} netns {self.client_ns}\n",
            )
            nodad = " nodad" if self.ip == 6 else ""
            for ns, veth, addr, addr6 in (
                (self.server_ns, self.server_veth, self.server_addr, self.server_addr6),
                (self.client_ns, self.client_veth, self.client_addr, self.client_addr6),
            ):
                extra = f"addr add {addr6}/{PREFIX_LEN6} dev {veth} nodad\n" if addr6 else ""
                _ip(
                    ["-n", ns],
                    "link set lo up\n"
                    f"addr add {addr}/{self.prefix_len} dev {veth}{nodad}\n"
                    f"{extra}"
                    f"link set {veth} up\n",
                )
            for ns, values in self._sysctls.items():
                for key, value in values.items():
                    set_sysctl(ns, key, value)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Delete both namespaces (veth and nft tables go with them) and the registry file.

        Idempotent and bounded; a Ctrl-C during teardown is deferred until teardown is done.
        """
        if not self.created:
            return
        interrupted: BaseException | None = None
        failure = ""
        for _attempt in range(2):
            try:
                existing = [ns for ns in self.namespaces if netns_exists(ns)]
                if existing:
                    _ip(["-force"], "".join(f"netns delete {ns}\n" for ns in existing))
                break
            except KeyboardInterrupt as error:
                interrupted = error  # finish teardown first, re-raise below
            except (NetworkError, MissingDependencyError) as error:
                failure = str(error)
        left = [ns for ns in self.namespaces if netns_exists(ns)]
        if not left:
            self.registry.forget(*self._objects)
            self.created = False
        if interrupted is not None:
            raise interrupted
        if left:
            # The registry file stays, so stale_cleanup / doctor --cleanup can finish the job.
            raise NetworkError(f"could not delete namespace(s) {', '.join(left)}: {failure}")

    def set_sysctl(self, ns: str, key: str, value: SysctlValue) -> None:
        """Set ``key`` in one of this pair's namespaces (``pair.server_ns`` or ``client_ns``)."""
        if ns not in self.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of run {self.run_id}")
        set_sysctl(ns, key, value)

    def in_server(self) -> AbstractContextManager[None]:
        """``with pair.in_server(): sock = socket.socket()`` creates the socket server-side."""
        return in_netns(self.server_ns)

    def in_client(self) -> AbstractContextManager[None]:
        """``with pair.in_client(): ...`` creates sockets in the client's namespace."""
        return in_netns(self.client_ns)

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The async forms run the same synchronous code on purpose: creation and teardown take
    # tens of milliseconds, and a synchronous teardown cannot be cut short by cancellation.
    async def __aenter__(self) -> Self:
        return self.create()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetnsPair(run_id={self.run_id!r}, created={self.created})"


__all__ = [
    "CLIENT_ADDR",
    "CLIENT_ADDR6",
    "PREFIX_LEN",
    "SERVER_ADDR",
    "SERVER_ADDR6",
    "NetnsPair",
    "get_sysctl",
    "set_sysctl",
    "sysctl_path",
]
