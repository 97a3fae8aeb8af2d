"""Can this machine build the netns topology? Answered without creating anything.

Why a separate check: ``doctor`` and ``run --topology netns`` must say what is missing and
what it costs before a lab starts, rather than failing half-way through building a pair.

The topology is built with named namespaces (``ip netns add``, bind mounts under
``/run/netns``), which needs root. A normal user gets that root inside a user namespace of
their own: ``run`` re-executes itself under ``unshare -rn`` (see ``topo.userns``) when
``user_namespaces_work``. ``netns_capability`` answers for THIS process (can it build the pair
now?); ``netns_route_facts`` answers for the command line (will ``run --topology netns`` work,
and how?), as facts that ``doctor`` words in the user's language.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from handshake_lab import tools

NEEDS_NETNS = (
    "--topology netns, the nft packet holds (SYN_SENT/SYN_RECV/FIN_WAIT1/LAST_ACK/CLOSING held "
    "still) and per-namespace sysctls (port-range and tcp_tw_reuse exercises)"
)
"""What is lost without network namespaces; quoted in every negative reason."""


def user_namespaces_work(timeout: float = 3.0) -> tuple[bool, str]:
    """Try ``unshare -rn true``: can this user get a private network namespace?"""
    unshare = tools.find("unshare")
    if unshare is None:
        return False, "unshare not found (util-linux)"
    try:
        done = subprocess.run(
            [unshare, "-rn", "true"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"unshare -rn failed: {error}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return False, f"unshare -rn refused ({lines[0] if lines else done.returncode})"
    return True, "unshare -rn works"


NO_IP = f"ip not found: install iproute2; without it no {NEEDS_NETNS}"


def _nft_note() -> str:
    return "" if nft_available() else " (nft missing: packet holds unavailable)"


def netns_capability() -> tuple[bool, str]:
    """``(ok, reason)``: ok when the netns topology can be built now (root with ``ip``)."""
    if os.geteuid() == 0:
        ip = tools.find("ip")
        if ip is None:
            return False, NO_IP
        return True, f"root with {ip}: network namespaces available{_nft_note()}"
    return False, _not_root(*user_namespaces_work())


@dataclass(frozen=True)
class NetnsRoute:
    """Will ``handshake-lab run --topology netns`` work for this user, and how: ``how`` is
    ``"root"``, ``"userns"`` (a normal user, in a user namespace), ``"no_ip"`` or
    ``"no_userns"``; ``detail`` is what the probe found (the ``ip`` path, unshare's answer).
    ``doctor`` words it per language (``i18n.doctor``, the ``netns_*`` texts)."""

    ok: bool
    how: str
    detail: str
    nft: bool


def netns_route_facts() -> NetnsRoute:
    """Will ``handshake-lab run --topology netns`` work for this user, and how?"""
    nft = nft_available()
    ip = tools.find("ip")
    if ip is None:
        return NetnsRoute(False, "no_ip", "", nft)
    if os.geteuid() == 0:
        return NetnsRoute(True, "root", ip, nft)
    userns_ok, userns_detail = user_namespaces_work()
    return NetnsRoute(userns_ok, "userns" if userns_ok else "no_userns", userns_detail, nft)


def _not_root(userns_ok: bool, userns_detail: str) -> str:
    """Why this (non-root) process cannot build the pair itself, and what would."""
    if userns_ok:
        why = (
            "not root: this process cannot build namespaces; the command line "
            f"(handshake-lab run) reruns itself in a user namespace ({userns_detail})"
        )
    else:
        why = (
            "not root and unprivileged user namespaces are unavailable "
            f"({userns_detail}; some distributions block them, e.g. Ubuntu >= 23.10)"
        )
    return f"{why}; run as root (sudo) for {NEEDS_NETNS}"


def nft_available() -> bool:
    """True if the ``nft`` binary is on PATH (packet holds need it)."""
    return tools.find("nft") is not None


__all__ = [
    "NEEDS_NETNS",
    "NetnsRoute",
    "netns_capability",
    "netns_route_facts",
    "nft_available",
    "user_namespaces_work",
]
