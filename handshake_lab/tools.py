"""System tools (``ip``, ``ss``, ``nft``, ...): one lookup, one "not found" line, one package.

Debian gives a normal user a PATH without ``/usr/sbin`` and ``/sbin``, where ``nft`` and
``sysctl`` live (``ip`` has a copy in ``/usr/bin``): a netns lab then found ``ip`` and died in
the middle of the run with "nft not found" though ``/usr/sbin/nft`` was there (issue 14). So
every tool is looked up on PATH first, then in the system directories, and run by its full
path (also through ``ip netns exec``, which would search PATH again). A tool that is really
missing is refused before step 1 (``require``), with the Debian package that provides it.
"""

from __future__ import annotations

import os
import shutil

from handshake_lab.errors import MissingDependencyError

SYSTEM_DIRS: tuple[str, ...] = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")
"""Searched after PATH: where Debian, Ubuntu and Fedora put the tools a normal PATH lacks."""

DIRS_ENV = "HSLAB_SYSTEM_DIRS"
"""Overrides ``SYSTEM_DIRS`` (``:``-separated; empty: PATH only). For systems that keep their
tools elsewhere, and for tests that need a tool to be really missing."""


def system_dirs() -> tuple[str, ...]:
    value = os.environ.get(DIRS_ENV)
    if value is None:
        return SYSTEM_DIRS
    return tuple(d for d in value.split(os.pathsep) if d)


PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "ss": "iproute2",
    "tc": "iproute2",
    "nft": "nftables",
    "tcpdump": "tcpdump",
    "tshark": "tshark",
    "sysctl": "procps",
    "unshare": "util-linux",
}
"""The Debian/Ubuntu package of each tool, for the "not found" line."""


def find(name: str) -> str | None:
    """The full path of tool ``name``: on PATH, else in ``SYSTEM_DIRS``; None if absent."""
    found = shutil.which(name)
    dirs = system_dirs()
    if found is None and dirs:
        found = shutil.which(name, path=os.pathsep.join(dirs))
    return found


def missing(name: str) -> str:
    """The one line for a tool that is not installed."""
    package = PACKAGES.get(name, name)
    return (
        f"{name} not found (looked on PATH and in {', '.join(system_dirs()) or 'nothing else'}): "
        f"install {package} (Debian/Ubuntu: apt install {package})"
    )


def require(name: str) -> str:
    """The full path of ``name``, or ``MissingDependencyError`` (exit 6) naming its package."""
    found = find(name)
    if found is None:
        raise MissingDependencyError(missing(name))
    return found


def command(name: str) -> str:
    """What to put in an argv for ``name``: its full path when found, else the bare name (the
    spawn then fails with FileNotFoundError, which the caller already translates)."""
    return find(name) or name


def needed_for(topology: str, *, holds: bool) -> list[str]:
    """The tools a run in ``topology`` needs beyond ``ss`` (checked by the observers)."""
    if topology != "netns":
        return []
    return ["ip", "nft"] if holds else ["ip"]


__all__ = [
    "DIRS_ENV",
    "PACKAGES",
    "SYSTEM_DIRS",
    "command",
    "find",
    "missing",
    "needed_for",
    "require",
    "system_dirs",
]
