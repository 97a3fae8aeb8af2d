"""What this machine offers IPv6 labs (``run -6``, the dual-stack lab): read, then decided.

``read_ipv6_facts`` reads what decides it (changing nothing: a fresh namespace made for the
probe is gone when its one process exits, and no host setting is written); ``ipv6_findings``
turns facts into findings, a pure function that the unit tests drive with fake facts;
``doctor`` prints them (``i18n.doctor`` has the words, en and zh).

What decides it:

- the kernel has IPv6 at all: ``/proc/sys/net/ipv6`` exists (not when booted with
  ``ipv6.disable=1`` or built without it);
- ``::1`` is usable: a socket binds to it (not when ``disable_ipv6`` is 1 for ``all`` or ``lo``);
  ``-6`` on loopback and the dual-stack lab need it;
- ``net.ipv6.bindv6only``: 0 (Linux's default) lets an IPv6 listener on ``::`` take IPv4 clients
  as ``::ffff:a.b.c.d``; the dual-stack lab sets IPV6_V6ONLY itself, so it runs either way;
- a new network namespace has IPv6: its ``net.ipv6.conf.default.disable_ipv6`` (which the veth
  of a lab's pair gets) is 0, and ``::1`` binds there once ``lo`` is up. With
  ``net.core.devconf_inherit_init_net = 0`` (the default) a new namespace resets IPv6 settings
  to the kernel's defaults, so an administrator's ``disable_ipv6 = 1`` on the host does not
  carry over, but the boot option ``ipv6.disable_ipv6=1`` does. Measured, not assumed: the
  probe enters a fresh namespace the way a run would (root: ``unshare -n``; a normal user:
  ``unshare -rn``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from handshake_lab import tools
from handshake_lab.topo.caps import user_namespaces_work

PROC_IPV6 = Path("/proc/sys/net/ipv6")
PROBE_TIMEOUT = 5.0

# Run inside the fresh namespace: bring lo up, read the namespace's IPv6 defaults, bind ::1.
_PROBE = """
import json, socket, subprocess, sys
out = {}
for key in ("default", "all", "lo"):
    try:
        with open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6") as fh:
            out[key] = int(fh.read())
    except OSError:
        out[key] = None
subprocess.run([sys.argv[1], "link", "set", "lo", "up"], check=False, capture_output=True)
try:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
    out["bind"] = None
except OSError as exc:
    out["bind"] = exc.strerror or str(exc)
print(json.dumps(out))
"""


@dataclass(frozen=True, slots=True)
class NetnsIpv6:
    """IPv6 in a fresh network namespace, as the probe found it."""

    default_disabled: bool | None  # its net.ipv6.conf.default.disable_ipv6 == 1 (None: unread)
    bind_error: str | None  # None: ::1 bound there once lo was up


@dataclass(frozen=True, slots=True)
class Ipv6Facts:
    """What decides whether IPv6 labs can run here (``read_ipv6_facts`` reads them)."""

    kernel: bool  # /proc/sys/net/ipv6 exists
    disabled: dict[str, bool] = field(default_factory=dict)  # conf/{all,lo}/disable_ipv6 == 1
    loopback_error: str | None = None  # binding ::1 failed with this (None: it worked)
    bindv6only: int | None = None
    netns: NetnsIpv6 | None = None  # None: not probed (why: netns_note)
    netns_note: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of ``doctor``: ``ok`` (None: for information), a short name, the key of its
    text in ``i18n.doctor`` and the values the text takes."""

    ok: bool | None
    name: str
    key: str
    values: dict[str, str] = field(default_factory=dict)


def ipv6_findings(facts: Ipv6Facts) -> list[Finding]:
    """The IPv6 lines of ``doctor`` for ``facts``: kernel, ::1, bindv6only, namespaces, and
    what that means for ``-6`` and the dual-stack lab."""
    if not facts.kernel:
        return [
            Finding(False, "ipv6", "kernel_missing"),
            Finding(False, "-6", "six_none"),
        ]
    out = [Finding(True, "ipv6", "kernel_ok")]
    off = [name for name in ("all", "lo") if facts.disabled.get(name)]
    if facts.loopback_error is None:
        out.append(Finding(True, "::1", "lo_ok"))
    elif off:
        out.append(Finding(False, "::1", "lo_disabled", {"which": off[0]}))
    else:
        out.append(Finding(False, "::1", "lo_error", {"error": facts.loopback_error}))
    if facts.bindv6only is not None:
        key = "v6only_0" if facts.bindv6only == 0 else "v6only_1"
        out.append(Finding(None, "v6only", key, {"value": str(facts.bindv6only)}))
    netns = facts.netns
    netns_ok: bool | None = None
    if netns is None:
        out.append(Finding(None, "netns6", "netns_unknown", {"why": facts.netns_note}))
    elif netns.default_disabled:
        netns_ok = False
        out.append(Finding(False, "netns6", "netns_disabled"))
    elif netns.bind_error is not None:
        netns_ok = False
        out.append(Finding(False, "netns6", "netns_error", {"error": netns.bind_error}))
    else:
        netns_ok = True
        out.append(Finding(True, "netns6", "netns_ok"))
    loopback_ok = facts.loopback_error is None
    if loopback_ok:
        key = {True: "six_all", False: "six_loopback", None: "six_loopback_unknown"}[netns_ok]
        out.append(Finding(True, "-6", key))
    else:
        out.append(Finding(False, "-6", "six_netns" if netns_ok else "six_none"))
    return out


def read_ipv6_facts(*, probe_netns: bool = True) -> Ipv6Facts:
    """The facts of this machine (reads only; see the module docstring for the probe)."""
    if not PROC_IPV6.is_dir():
        return Ipv6Facts(kernel=False)
    disabled = {}
    for name in ("all", "lo"):
        value = _read_int(PROC_IPV6 / "conf" / name / "disable_ipv6")
        disabled[name] = value == 1
    netns, note = probe_fresh_namespace() if probe_netns else (None, "not probed")
    return Ipv6Facts(
        kernel=True,
        disabled=disabled,
        loopback_error=_bind_error("::1"),
        bindv6only=_read_int(PROC_IPV6 / "bindv6only"),
        netns=netns,
        netns_note=note,
    )


def probe_fresh_namespace(timeout: float = PROBE_TIMEOUT) -> tuple[NetnsIpv6 | None, str]:
    """IPv6 in a new network namespace: (what the probe found, or None and why not)."""
    unshare, ip = tools.find("unshare"), tools.find("ip")
    if unshare is None or ip is None:
        return None, f"{'unshare (util-linux)' if unshare is None else 'ip (iproute2)'} not found"
    if os.geteuid() == 0:
        argv = [unshare, "-n"]
    else:
        works, detail = user_namespaces_work()
        if not works:
            return None, f"no namespace for this user ({detail})"
        argv = [unshare, "-rn"]
    try:
        done = subprocess.run(
            [*argv, sys.executable, "-c", _PROBE, ip],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"the probe failed: {error}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        err = done.stderr.strip().splitlines()
        return None, f"the probe failed: {err[-1] if err else f'exit {done.returncode}'}"
    try:
        found = json.loads(lines[-1])
        default = found["default"]
        return NetnsIpv6(
            default_disabled=None if default is None else default == 1,
            bind_error=found["bind"],
        ), ""
    except (ValueError, KeyError, TypeError) as error:
        return None, f"the probe failed: unreadable answer ({error})"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _bind_error(host: str) -> str | None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
