"""Which observers a run reads: the one place that decides it.

A lab step is confirmed by ``ss`` and psutil side by side (what the tables show); polling uses
the netlink observer where it works (a fraction of a millisecond per read). Every lab socket
is of one IP version per run (``--ip 4``: 127.0.0.1, 198.18.0.0/15; ``--ip 6``: ::1,
2001:db8:198:18::/64), so the defaults read that version only, half the cost; a dual-stack
lab's run (``DUAL_STACK``) reads both.
"""

from __future__ import annotations

from handshake_lab.errors import HandshakeLabError
from handshake_lab.observe.base import Observer
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.spec.model import DUAL_STACK


def default_observers(ip: int = 4) -> list[Observer]:
    """ss and psutil side by side, as the labs promise, reading IP version ``ip`` (4 or 6).
    Fails early if either is missing."""
    if ip not in (4, 6, DUAL_STACK):
        raise ValueError(f"IP version must be 4, 6 or {DUAL_STACK} (both), not {ip!r}")
    observers: list[Observer] = [
        SsObserver(ipv4_only=ip == 4, ipv6_only=ip == 6),
        PsutilObserver(kind="tcp" if ip == DUAL_STACK else f"tcp{ip}"),
    ]
    for observer in observers:
        observer.snapshot([])  # raises ObserverError with an install hint if unusable
    return observers


def fast_observer(netns: str | None = None) -> Observer | None:
    """The netlink observer for polling (in ``netns``), or None where it cannot work."""
    try:
        observer = NetlinkObserver(netns=netns)
        observer.snapshot([])
    except (HandshakeLabError, OSError):
        return None
    return observer


def fast_observers(netns: str | None = None) -> list[Observer]:
    """``fast_observer`` as a list: empty where netlink cannot be read."""
    fast = fast_observer(netns)
    return [fast] if fast is not None else []
