"""``sweep``: the same lab once per RTT, each run a whole ordinary run (``session.execute``)
in fresh namespaces whose wire netem slows (``topo.netem``), its record read for times
(``record.sweep``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from handshake_lab.lab.runner import Emit
from handshake_lab.lab.session import RunRequest, execute
from handshake_lab.record.run import RunRecord
from handshake_lab.record.sweep import SweepPoint, sweep_point
from handshake_lab.topo.netem import Link


def parse_delays(text: str) -> list[float]:
    """``"0,10,50,200"`` -> [0.0, 10.0, 50.0, 200.0]; ``ValueError`` naming the bad item."""
    delays: list[float] = []
    for item in text.split(","):
        item = item.strip()  # noqa: PLW2901 - the item without spaces
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--delay {text!r}: {item!r} is not a number of ms") from None
        Link(rtt_ms=value)  # the range check, with its message
        if value in delays:
            raise ValueError(f"--delay {text!r}: {item} ms twice")
        delays.append(value)
    if not delays:
        raise ValueError("--delay needs at least one value")
    return delays


def sweep(
    base: RunRequest,
    delays: Sequence[float],
    loss: float,
    emit_for: Callable[[Link], Emit],
) -> Iterator[tuple[SweepPoint, RunRecord]]:
    """Run ``base`` at each delay (with ``loss``), one after the other; yields each run's
    point and record as it ends. ``emit_for(link)`` gives each run its event sink."""
    for delay in delays:
        link = Link(rtt_ms=delay, loss_pct=loss)
        # Passed also at 0 ms: no qdisc then, but every run's record says what the wire had.
        record = execute(dataclasses.replace(base, link=link), emit_for(link))
        yield sweep_point(record), record


__all__ = ["parse_delays", "sweep"]
