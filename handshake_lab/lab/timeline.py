"""One timeline of states per socket: the transition stream reconciled with the socket table.

The tracepoint (``sock:inet_sock_set_state``) and the table (ss, psutil, netlink) each miss
what the other sees (KERNEL-FACTS, "Transition stream"). A view that drew the stream alone
would say what the kernel did not:

- A full socket handed to a timewait mini-socket is traced as ``-> CLOSE``, while the table
  shows it in TIME_WAIT (or in FIN_WAIT2 for an orphan waiting for the peer's FIN). Where the
  table shows the 4-tuple in one of those states, the move is recorded as ``-> TIME_WAIT`` (or
  ``-> FIN_WAIT2``), with ``"traced": "CLOSE"`` kept beside it. TIME_WAIT ends when the socket
  leaves the table.
- A listener never changes state for a SYN: the SYN creates a request socket (the table shows
  it as SYN_RECV; the stream does not see it), and at the final ACK the kernel clones the
  listener into the child socket, traced as ``LISTEN -> SYN_RECV -> ESTABLISHED`` within
  microseconds. The child's first move is therefore recorded from the state its 4-tuple last
  had (ABSENT, or SYN_RECV where the table showed the request socket), caused by the ACK;
  a "move" from SYN_RECV to SYN_RECV is no move and is dropped. Where the 4-tuple was last
  held by a timewait socket, a newer SYN reopened it (RFC 6191): that SYN ended the timewait
  socket (untraced), and the ACK created the child. Both are recorded, the end of TIME_WAIT
  caused by the SYN and the child from ABSENT caused by the ACK, at the child's time: the
  stream says no more precisely when TIME_WAIT ended, only that it had by then.
- A move the stream cannot see (a request socket appearing, a timewait socket leaving, a
  timewait FIN_WAIT2 becoming TIME_WAIT) or every move when there is no stream (not root) is
  recorded from the table, at the time of the read that showed it (``"source": "table"``).

So every state in the result is one the kernel reported at that moment, by one source or the
other. Pure: records in, records out; the runner keeps ``known`` (4-tuple -> last state) from
step to step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

ABSENT = "ABSENT"
GONE = frozenset({ABSENT, "CLOSE"})
"""A socket in CLOSE and a socket not in the table are the same thing to a view."""
TIMEWAIT_STATES = frozenset({"TIME_WAIT", "FIN_WAIT2"})
"""States a timewait mini-socket is in (``ss -tan`` shows both)."""
CHILD_CAUSE = "ACK"
REOPEN_CAUSE = "SYN"

Key = tuple[str, str | None]
"""A socket: (local, remote) as ``host:port`` strings; remote None for a listener."""


def key_of(record: Mapping[str, Any]) -> Key:
    remote = record.get("remote")
    return str(record.get("local")), None if remote is None else str(remote)


def reconcile(
    traced: Iterable[dict[str, Any]],
    observed: Mapping[Key, tuple[str, str]],
    observed_ms: float,
    table_now: Mapping[Key, str],
    known: MutableMapping[Key, str],
) -> list[dict[str, Any]]:
    """The step's transitions, reconciled with the table (see the module docstring).

    ``traced``: the stream's records of this step (``evidence.transition_records``), in order.
    ``observed``: 4-tuple -> (side, state) of the step's final table read, taken at
    ``observed_ms``. ``table_now``: 4-tuple -> state of a read made after the stream was
    collected, for moves traced after ``observed_ms``. ``known``: each socket's last state,
    updated in place.
    """
    out: list[dict[str, Any]] = []
    table_done = False

    def table_pass() -> None:
        for key, (side, state) in observed.items():
            before = known.get(key, ABSENT)
            if state == before or (state in GONE and before in GONE):
                continue
            out.append(
                {
                    "t_ms": observed_ms,
                    "side": side,
                    "old": before,
                    "new": state,
                    "cause": None,
                    "local": key[0],
                    "remote": key[1],
                    "source": "table",
                }
            )
            known[key] = state

    for raw in sorted(traced, key=lambda r: float(r["t_ms"])):
        record = dict(raw)
        if not table_done and float(record["t_ms"]) > observed_ms:
            table_pass()
            table_done = True
        key = key_of(record)
        record["source"] = "trace"
        if record["old"] == "LISTEN" and record["new"] == "SYN_RECV" and key[1] is not None:
            # A child socket cloned from the listener at the final ACK (see above).
            record["old"] = known.get(key, ABSENT)
            record["cause"] = CHILD_CAUSE
            record["note"] = "child socket created by the final ACK"
            if record["old"] in TIMEWAIT_STATES:
                out.append(
                    {
                        **record,
                        "new": ABSENT,
                        "cause": REOPEN_CAUSE,
                        "note": "a new connection's SYN ended the timewait socket (untraced)",
                    }
                )
                record["old"] = ABSENT
            if record["old"] == record["new"]:
                known[key] = record["new"]
                continue
        if record["new"] == "CLOSE":
            # The step's read where it saw this socket and came after the move; else the
            # read made after the stream was collected (sockets no side names: churn).
            if key in observed and float(record["t_ms"]) <= observed_ms:
                table = observed[key][1]
            else:
                table = table_now.get(key, "")
            if table in TIMEWAIT_STATES:
                record["traced"] = "CLOSE"
                record["new"] = table
                record["note"] = "the timewait socket took over"
        known[key] = record["new"]
        out.append(record)
    if not table_done:
        table_pass()
    return out
