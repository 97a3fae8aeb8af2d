"""Put several sources' answers side by side, socket by socket (matched by 4-tuple).

Why more than one source: ``ss`` and psutil read the same kernel table at slightly different
moments and through different code, so a lab that shows both (and says when they differ)
lets a reader trust the output, and catches a parser that went wrong. A difference is not
an error: a socket can change state between two reads (FIN_WAIT2 -> TIME_WAIT takes a
microsecond on loopback), so the result keeps every source's view and says what differs.

Matching is exact on ``(local, remote)``. For a listener (``remote=None``) the local address
must be the one it is bound to: a listener on ``0.0.0.0:P`` does NOT match ``127.0.0.1:P``.
The code that created the socket knows the bound address; a fuzzy match would make two
different listeners (``0.0.0.0:P`` and ``127.0.0.1:P`` with SO_REUSEPORT-style setups, or a
v6 and a v4 one) look like one.

When sources disagree, ``state`` is the state of the first source (in mapping order) that
sees the socket: callers put ``ss`` first, as it is the primary source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from handshake_lab.observe.base import Address, SocketRecord, Timer
from handshake_lab.tcp.states import TcpState

Key = tuple[Address, Address | None]


@dataclass(frozen=True)
class SourceView:
    """What one source says about one socket; all ``None`` if it does not see it."""

    state: TcpState | None
    raw: str | None
    record: SocketRecord | None


ABSENT = SourceView(state=None, raw=None, record=None)


@dataclass(frozen=True)
class Reconciled:
    """One socket (4-tuple) as every source sees it."""

    local: Address
    remote: Address | None
    state: TcpState | None
    """``None`` means ABSENT: no source sees the socket."""
    sources: dict[str, SourceView]
    """Every source asked, in order, including those that do not see the socket."""
    agree: bool
    """All sources report the same state, or all report nothing."""
    timer: Timer | None
    pid: int | None
    note: str | None
    """A short sentence when sources differ; ``None`` when they agree."""


def index(records: Iterable[SocketRecord]) -> dict[Key, SocketRecord]:
    """Records by 4-tuple. If a key repeats (e.g. SO_REUSEPORT listeners), the first wins."""
    result: dict[Key, SocketRecord] = {}
    for record in records:
        result.setdefault(record.key, record)
    return result


def _names(names: Sequence[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _note(views: Mapping[str, SourceView], read_at: Mapping[str, float] | None) -> str | None:
    missing = [name for name, view in views.items() if view.state is None]
    present = [(name, view.state) for name, view in views.items() if view.state is not None]
    if not present or (not missing and len({state for _, state in present}) == 1):
        return None
    parts: list[str] = []
    if len({state for _, state in present}) > 1:
        parts.append(", ".join(f"{name} says {state.name}" for name, state in present))
    else:
        parts.append(f"{_names([name for name, _ in present])} says {present[0][1].name}")
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        parts.append(f"{_names(missing)} {verb} not see it")
    sentence = "; ".join(parts)
    if read_at is not None:
        times = [read_at[name] for name in views if name in read_at]
        if len(times) > 1:
            sentence += f" (read {(max(times) - min(times)) * 1000:.0f} ms apart)"
    return sentence


def reconcile(
    snapshots: Mapping[str, Sequence[SocketRecord]],
    local: Address,
    remote: Address | None,
    *,
    read_at: Mapping[str, float] | None = None,
) -> Reconciled:
    """How every source in ``snapshots`` sees the socket ``(local, remote)``.

    ``read_at`` (optional, ``time.monotonic()`` per source) adds how far apart the reads
    were to the note, which is usually why sources differ.
    """
    indexes = {name: index(records) for name, records in snapshots.items()}
    return _reconcile_key(indexes, (local, remote), read_at)


def reconcile_all(
    snapshots: Mapping[str, Sequence[SocketRecord]],
    *,
    read_at: Mapping[str, float] | None = None,
) -> list[Reconciled]:
    """Every socket any source sees, reconciled, ordered by local then remote address."""
    indexes = {name: index(records) for name, records in snapshots.items()}
    keys = {key for by_key in indexes.values() for key in by_key}

    def order(key: Key) -> tuple[Address, bool, Address]:
        local, remote = key
        return (local, remote is not None, remote if remote is not None else local)

    return [_reconcile_key(indexes, key, read_at) for key in sorted(keys, key=order)]


def _reconcile_key(
    indexes: Mapping[str, Mapping[Key, SocketRecord]],
    key: Key,
    read_at: Mapping[str, float] | None,
) -> Reconciled:
    views: dict[str, SourceView] = {}
    for name, by_key in indexes.items():
        record = by_key.get(key)
        views[name] = (
            ABSENT
            if record is None
            else SourceView(state=record.state, raw=record.raw_state, record=record)
        )
    seen = [view.record for view in views.values() if view.record is not None]
    # A source's own Address objects: equal to the key's, and they keep ``mapped`` (the socket
    # is an IPv6 one talking IPv4), which the key asked for by the other end cannot know.
    local, remote = (seen[0].local, seen[0].remote) if seen else key
    return Reconciled(
        local=local,
        remote=remote,
        state=seen[0].state if seen else None,
        sources=views,
        agree=len({view.state for view in views.values()}) <= 1,
        timer=next((record.timer for record in seen if record.timer is not None), None),
        pid=next((record.pid for record in seen if record.pid is not None), None),
        note=_note(views, read_at),
    )


__all__ = ["ABSENT", "Key", "Reconciled", "SourceView", "index", "reconcile", "reconcile_all"]
