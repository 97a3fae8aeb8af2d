"""What a test needs from the machine, and the one rule for when it is not there.

A missing tool (nft, tcpdump, tshark, vagrant, vagrant-libvirt, systemd-analyze, ...) or a
missing kernel feature (unprivileged user namespaces) skips the test with the reason, on a
developer's bare machine. Under ``CI=true`` it fails instead: CI installs everything, so a
skip there would only hide a broken set-up (a test that never ran looks like one that
passed). Every test that needs something calls this module; nothing else calls
``pytest.skip`` for a missing tool.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from handshake_lab import tools


def in_ci() -> bool:
    """``CI`` set to true/1/yes (GitHub Actions, GitLab, this project's .ci/run)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``; under CI, fail with it."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, where it must be installed", pytrace=False)
    pytest.skip(reason)


def tool(name: str, package: str | None = None) -> str:
    """The full path of tool ``name`` (PATH, then /usr/sbin, /sbin: ``handshake_lab.tools``),
    or skip (fail under CI) naming the package that provides it."""
    path = tools.find(name)
    if path is None:
        pkg = package or tools.PACKAGES.get(name, name)
        unavailable(f"{name} is not installed (apt install {pkg})")
    return path


def require(ok: bool, reason: str) -> None:
    """Go on if ``ok``; else skip (fail under CI) with ``reason``."""
    if not ok:
        unavailable(reason)


__all__ = ["in_ci", "require", "tool", "unavailable"]
