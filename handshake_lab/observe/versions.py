"""Versions of the pieces a run depends on, for its report (a lab result is only as good as
the kernel and tools it was read from)."""

from __future__ import annotations

import platform
import subprocess
from functools import cache

import psutil

from handshake_lab import __version__, tools


@cache
def ss_version() -> str:
    exe = tools.find("ss")
    if exe is None:
        return "missing"
    try:
        out = subprocess.run(
            [exe, "-V"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().rsplit(" ", 1)[-1] or "unknown"


def base_versions() -> dict[str, str]:
    return {
        "handshake_lab": __version__,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "psutil": str(psutil.__version__),
        "ss": ss_version(),
    }
