"""``doctor``: what this machine offers, and what each missing piece costs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

from handshake_lab.errors import ExitStatus


def _check(name: str, ok: bool, detail: str, cost: str) -> tuple[str, bool, str]:
    return name, ok, detail if ok else f"{detail} - {cost}"


def doctor_report() -> ExitStatus:
    checks: list[tuple[str, bool, str]] = []
    ss = shutil.which("ss")
    checks.append(
        _check(
            "ss",
            ss is not None,
            ss or "not found",
            "labs cannot run: install iproute2 (apt install iproute2)",
        )
    )
    try:
        import psutil  # noqa: PLC0415

        checks.append(("psutil", True, str(psutil.__version__)))
    except ImportError:
        checks.append(("psutil", False, "missing - labs cannot run: pip install psutil"))
    try:
        import uvloop  # noqa: PLC0415

        checks.append(("uvloop", True, str(getattr(uvloop, "__version__", "?"))))
    except ImportError:
        checks.append(("uvloop", False, "missing - --loop uvloop unavailable: pip install uvloop"))
    root = os.geteuid() == 0
    checks.append(
        _check(
            "root",
            root,
            "running as root" if root else "not root",
            "loopback labs work; netns topology and packet holds need root or a user namespace",
        )
    )
    ip = shutil.which("ip")
    checks.append(_check("ip", ip is not None, ip or "not found", "no netns topology (iproute2)"))
    nft = shutil.which("nft")
    checks.append(
        _check(
            "nft", nft is not None, nft or "not found", "no packet holds (apt install nftables)"
        )
    )
    tracefs = Path("/sys/kernel/tracing/events/sock/inet_sock_set_state").exists()
    checks.append(
        _check(
            "tracefs",
            tracefs and root,
            "sock:inet_sock_set_state available" if tracefs else "not mounted or not readable",
            "no transition stream; states come from polling ss/psutil only",
        )
    )
    width = max(len(c[0]) for c in checks)
    for name, ok, detail in checks:
        typer.echo(f"{'ok ' if ok else '-- '} {name:<{width}}  {detail}")
    essential = {"ss", "psutil"}
    missing = [name for name, ok, _ in checks if name in essential and not ok]
    return ExitStatus.MISSING_DEPENDENCY if missing else ExitStatus.OK
