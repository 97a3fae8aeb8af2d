"""Timing the observers side by side on one filled namespace.

Three reads per backend, each the median of repeated runs after one warm-up call:
- full: every TCP socket in the namespace;
- port: the sockets on one 'lab' port (4 sockets among N), filter in the kernel for netlink
  and ss, in Python for psutil (it has no filter);
- lookup: one 4-tuple; netlink sends an exact request, ss gets a ``src A:P dst B:Q`` filter,
  psutil reads everything and picks the tuple;
- nomatch: the port-filtered request for a port no socket uses (port 1). Nothing is decoded,
  so this is the kernel's walk of the whole table plus one round trip: the floor under any
  sock_diag port filter (``ss`` included), printed beside the port-filtered target.

``ss`` runs as a child of this process, whose main thread is inside the namespace, so the
figures do not include ``ip netns exec`` (which would add a process start, ~1-2 ms).
pyroute2 (``DiagSocket.get_sock_stats`` for both families, full read only) is timed when it can
be imported, to back the hand-written reader decision; it is not a dependency.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET, AF_INET6
from typing import Any

from nsbench import Filled

from handshake_lab.observe.base import SocketRecord
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver, parse_ss

NO_SOCKET_PORT = 1
"""The bench fills ports >= 1024 (``ip_local_port_range 1024 65535``): nothing uses port 1."""


@dataclass(frozen=True)
class Row:
    n: int
    read: str
    ms: dict[str, float | None]  # backend -> median milliseconds (None: not measured)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: imports, caches, first socket
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _pyroute2() -> Callable[[], int] | None:
    try:
        module: Any = importlib.import_module("pyroute2")
    except ImportError:
        return None

    def read() -> int:
        with module.DiagSocket() as diag:
            diag.bind()
            return sum(len(list(diag.get_sock_stats(family=f))) for f in (AF_INET, AF_INET6))

    return read


def _ss_lookup(local: str, remote: str) -> list[SocketRecord]:
    argv = ["ss", "-tanoH", f"src {local} and dst {remote}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return parse_ss(done.stdout)


def measure(n: int, filled: Filled, repeats: int, *, slow_repeats: int) -> list[Row]:
    """The rows for one N. ``slow_repeats`` is used for psutil and pyroute2 full reads."""
    netlink, ss, ps = NetlinkObserver(), SsObserver(), PsutilObserver()
    port = [filled.probe_port]
    local, remote = filled.probe_local, filled.probe_remote

    def ps_lookup() -> SocketRecord | None:
        return next((r for r in ps.snapshot() if r.key == (local, remote)), None)

    assert netlink.lookup(local, remote) is not None, "probe connection missing"
    assert len(_ss_lookup(str(local), str(remote))) == 1
    assert ps_lookup() is not None
    assert netlink.snapshot([NO_SOCKET_PORT]) == [], "the no-match port is in use"
    pyroute2 = _pyroute2()
    rows = [
        Row(
            n,
            "full",
            {
                "netlink": median_ms(netlink.snapshot, repeats),
                "ss": median_ms(ss.snapshot, repeats),
                "psutil": median_ms(ps.snapshot, slow_repeats),
                "pyroute2": median_ms(pyroute2, slow_repeats) if pyroute2 else None,
            },
        ),
        Row(
            n,
            "port",
            {
                "netlink": median_ms(lambda: netlink.snapshot(port), repeats),
                "ss": median_ms(lambda: ss.snapshot(port), repeats),
                "psutil": median_ms(lambda: ps.snapshot(port), slow_repeats),
                "pyroute2": None,
            },
        ),
        Row(
            n,
            "nomatch",
            {
                "netlink": median_ms(lambda: netlink.snapshot([NO_SOCKET_PORT]), repeats),
                "ss": median_ms(lambda: ss.snapshot([NO_SOCKET_PORT]), repeats),
                "psutil": None,
                "pyroute2": None,
            },
        ),
        Row(
            n,
            "lookup",
            {
                "netlink": median_ms(lambda: netlink.lookup(local, remote), repeats * 20),
                "ss": median_ms(lambda: _ss_lookup(str(local), str(remote)), repeats),
                "psutil": median_ms(ps_lookup, slow_repeats),
                "pyroute2": None,
            },
        ),
    ]
    netlink.close()
    return rows


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(slow: float | None, fast: float | None) -> str:
    if slow is None or fast is None or fast <= 0:
        return "-"
    return f"{slow / fast:.1f}x"


def table(rows: list[Row]) -> str:
    """Milliseconds per read, and how many times slower ss and psutil are than netlink."""
    with_pyroute2 = any(row.ms.get("pyroute2") is not None for row in rows)
    head = f"{'N':>6} {'read':<7} {'netlink':>8} {'ss+parse':>9} {'psutil':>9}"
    head += f" {'pyroute2':>9}" if with_pyroute2 else ""
    head += f" {'ss/nl':>7} {'psutil/nl':>9}"
    lines = ["median milliseconds per read (lower is better)", head, "-" * len(head)]
    for row in rows:
        ms = row.ms
        line = f"{row.n:>6} {row.read:<7} {_cell(ms['netlink']):>8} {_cell(ms['ss']):>9}"
        line += f" {_cell(ms['psutil']):>9}"
        line += f" {_cell(ms.get('pyroute2')):>9}" if with_pyroute2 else ""
        line += f" {_ratio(ms['ss'], ms['netlink']):>7}"
        line += f" {_ratio(ms['psutil'], ms['netlink']):>9}"
        lines.append(line)
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets at the largest N, each with PASS or FAIL."""
    if not rows:
        return []
    top = max(row.n for row in rows)
    by_read = {row.read: row.ms for row in rows if row.n == top}
    full, port = by_read["full"], by_read["port"]
    floor = by_read.get("nomatch", {}).get("netlink")
    netlink_full = full["netlink"] or float("inf")
    ss_ratio = (full["ss"] or 0) / netlink_full
    ps_ratio = (full["psutil"] or 0) / netlink_full
    port_ms = port["netlink"] or float("inf")
    checks = [
        (f"full read at N={top}: netlink {ss_ratio:.1f}x faster than ss (>= 2x)", ss_ratio >= 2),
        (
            f"full read at N={top}: netlink {ps_ratio:.1f}x faster than psutil (>= 10x)",
            ps_ratio >= 10,
        ),
        (
            f"port-filtered read at N={top}: netlink {port_ms:.2f} ms (< 5 ms)"
            + (f" [kernel walk, no socket matching: {floor:.2f} ms]" if floor else ""),
            port_ms < 5,
        ),
    ]
    return [f"{'PASS' if ok else 'FAIL'}  {text}" for text, ok in checks]
