"""A slow or lossy wire between the lab's two namespaces: tc netem on the veth pair.

``--delay MS`` is the round-trip time the user adds, not a one-way delay: a segment and its
answer together take MS more, whichever end starts the exchange. All of it sits on ONE end: a
netem qdisc on the server's veth delays every segment the server sends by MS; the client's
segments leave at once. Why one end and not half on each: the run's capture is on the client's
veth (``Placed.capture``), so the client's segments are captured when its kernel sends them and
the server's when the client's kernel receives them; the ladder's gaps and the sweep's "answer
after" (from a segment the client sent to the transition its answer caused) are then exactly
the RTT the client lives with. Split in halves, every client segment would be captured MS/2
after it left the socket. The RTT stays exact either way (the delay is written in
microseconds). ``--loss PCT`` drops each segment, in either direction, with probability PCT
percent (netem ``loss`` on both ends).

Only ever on the veth ends inside namespaces this tool made (``topo.pair``): never on the
host's ``lo`` or on any interface the tool does not own. netem is a kernel option
(``CONFIG_NET_SCH_NETEM``, often the module ``sch_netem``); some kernels lack it. ``probe``
asks the kernel itself, by adding a netem qdisc to ``lo`` in a network namespace made for the
probe (``unshare -n``; ``unshare -rn`` without root) that vanishes with the probe's process:
reading a config file would miss a module, and a module that is missing from disk would look
present.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from handshake_lab import tools
from handshake_lab.errors import MissingDependencyError, NetemUnavailableError, NetworkError
from handshake_lab.signals import raise_if_interrupted

MAX_DELAY_MS = 60_000.0
"""The longest RTT ``--delay`` takes: a minute, well past every timer a lab waits for."""

TC_TIMEOUT = 5.0

UNKNOWN_QDISC = ("qdisc kind is unknown", "Unknown qdisc", "No such file or directory")
"""How tc says the kernel has no such qdisc (iproute2 with and without extended acks)."""


@dataclass(frozen=True, slots=True)
class Link:
    """What the wire between the two namespaces adds: ``rtt_ms`` round trip, ``loss_pct``."""

    rtt_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.rtt_ms <= MAX_DELAY_MS:
            raise ValueError(f"--delay must be 0 to {MAX_DELAY_MS:g} ms, not {self.rtt_ms:g}")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError(f"--loss must be 0 to 100 %, not {self.loss_pct:g}")

    @property
    def active(self) -> bool:
        """True when the wire must be changed at all (a qdisc is needed)."""
        return self.rtt_ms > 0 or self.loss_pct > 0

    @property
    def delay_us(self) -> int:
        """The RTT in whole microseconds (all of it on the server's end)."""
        return round(self.rtt_ms * 1000)

    def netem_args(self, end: str) -> list[str]:
        """The arguments after ``netem`` for the ``server`` or ``client`` veth end; empty
        when that end needs no qdisc."""
        args: list[str] = []
        if end == "server" and self.rtt_ms > 0:
            args += ["delay", f"{self.delay_us}us"]
        if self.loss_pct > 0:
            args += ["loss", f"{self.loss_pct:g}%"]
        return args

    def record(self) -> dict[str, float]:
        """The run record's ``link`` field (docs/json.md)."""
        return {"rtt_ms": self.rtt_ms, "loss_pct": self.loss_pct}


def _missing_line(detail: str) -> str:
    return (
        "--delay/--loss need tc netem, which this kernel lacks "
        f"(CONFIG_NET_SCH_NETEM; tc said: {detail})"
    )


def _tc(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=TC_TIMEOUT, check=False
        )
    except FileNotFoundError as error:
        raise MissingDependencyError(tools.missing("tc")) from error
    except subprocess.TimeoutExpired as error:
        raise NetworkError(f"tc did not finish in {TC_TIMEOUT:g} s") from error


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def probe() -> str | None:
    """None when this kernel can add a netem qdisc; else why not, as one line.

    Adds ``netem delay 1ms`` to ``lo`` in a fresh network namespace that only the probe's
    process lives in (nothing to remove afterwards). Raises ``MissingDependencyError`` when
    ``tc`` or ``unshare`` is missing."""
    tc = tools.require("tc")
    unshare = tools.require("unshare")
    flags = "-n" if os.geteuid() == 0 else "-rn"
    done = _tc([unshare, flags, tc, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    if done.returncode == 0:
        return None
    raise_if_interrupted(done.returncode, "tc")
    detail = _last_line(done)
    if any(text in detail for text in UNKNOWN_QDISC):
        return _missing_line(detail)
    return f"cannot probe for netem: {detail}"


def require() -> None:
    """``NetemUnavailableError`` (exit 13) unless ``probe`` finds netem."""
    reason = probe()
    if reason is not None:
        raise NetemUnavailableError(reason)


def apply(netns: str, dev: str, link: Link, end: str) -> None:
    """Put ``link``'s netem qdisc for ``end`` (``server``/``client``) on ``dev`` in namespace
    ``netns`` (one of the lab's); nothing when that end needs none."""
    args = link.netem_args(end)
    if not args:
        return
    argv = [tools.command("tc"), "-n", netns, "qdisc", "add", "dev", dev, "root", "netem"]
    done = _tc([*argv, *args])
    if done.returncode == 0:
        return
    raise_if_interrupted(done.returncode, "tc")
    detail = _last_line(done)
    if any(text in detail for text in UNKNOWN_QDISC):
        raise NetemUnavailableError(_missing_line(detail))
    raise NetworkError(f"tc qdisc add dev {dev} netem failed in {netns}: {detail}")


__all__ = ["MAX_DELAY_MS", "Link", "apply", "probe", "require"]
