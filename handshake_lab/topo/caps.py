"""Can this machine build the netns topology? Answered without creating anything.

Why a separate check: ``doctor`` and ``run --topology netns`` must say what is missing and
what it costs before a lab starts, rather than failing half-way through building a pair.

This release builds named namespaces (``ip netns add``, bind mounts under ``/run/netns``), which
needs real root. Unprivileged user namespaces (``unshare -rn``) would give a private netns with
nft and per-namespace sysctls (KERNEL-FACTS, "Namespaces"), but this release does not use them
yet; the check still reports whether they work, so the reason tells the user what a future
release (or root) would unlock.
"""

from __future__ import annotations

import os
import shutil
import subprocess

NEEDS_NETNS = (
    "--topology netns, the nft packet holds (SYN_SENT/SYN_RECV/FIN_WAIT1/LAST_ACK/CLOSING held "
    "still) and per-namespace sysctls (port-range and tcp_tw_reuse exercises)"
)
"""What is lost without network namespaces; quoted in every negative reason."""


def user_namespaces_work(timeout: float = 3.0) -> tuple[bool, str]:
    """Try ``unshare -rn true``: can this user get a private network namespace?"""
    unshare = shutil.which("unshare")
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


def netns_capability() -> tuple[bool, str]:
    """``(ok, reason)``: ok when the netns topology can be built now (root with ``ip``)."""
    ip = shutil.which("ip")
    if os.geteuid() == 0:
        if ip is None:
            return False, f"ip not found: install iproute2; without it no {NEEDS_NETNS}"
        nft = "" if shutil.which("nft") else " (nft missing: packet holds unavailable)"
        return True, f"root with {ip}: network namespaces available{nft}"
    userns_ok, userns_detail = user_namespaces_work()
    if userns_ok:
        why = (
            "not root: this release builds network namespaces only as root "
            f"(unprivileged user namespaces do work here: {userns_detail}, but are not used yet)"
        )
    else:
        why = (
            "not root and unprivileged user namespaces are unavailable "
            f"({userns_detail}; some distributions block them, e.g. Ubuntu >= 23.10)"
        )
    return False, f"{why}; run as root (sudo) for {NEEDS_NETNS}"


def nft_available() -> bool:
    """True if the ``nft`` binary is on PATH (packet holds need it)."""
    return shutil.which("nft") is not None


__all__ = ["NEEDS_NETNS", "netns_capability", "nft_available", "user_namespaces_work"]
