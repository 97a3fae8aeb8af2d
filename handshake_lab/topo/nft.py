"""Holds: nftables rules inside a lab namespace that drop chosen TCP segments.

Why nftables: polling misses states that last microseconds (SYN_SENT, SYN_RECV, LAST_ACK on a
fast link). Dropping the segment that would end a state holds it still long enough to show it,
and the kernel's own retransmission releases it when the hold goes (KERNEL-FACTS, "Holding
states still"). No netem on this kernel, so nft it is. A drop is proved by the rule's named
counter (``dropped``), never assumed: a capture on the veth sees segments before the input hook.

Everything lives in one table per namespace, ``inet hslab_<run id>_<role>`` (see
``registry.nft_table_name``), created inside a namespace this tool made and so removed with it;
the host's ruleset is never read or written. Each hold is its own regular chain ``h_<hex>``
with a named counter of the same name, reached from the base chain of its hook by a
``jump`` per port direction.

What each kind matches (``F`` = the flags FIN|SYN|RST|PSH|ACK|URG; ECE/CWR are ignored so ECN
does not change the match). All kinds run on the ``input`` hook by default - that is where
KERNEL-FACTS verified them: SYN on the server's input, SYN-ACK on the client's input, pure ACK
on the server's input, the ACK of a FIN on the FIN sender's input. ``hook="output"`` is
available for recipes that drop at the sender.

- ``drop_syn``: ``tcp flags & (fin|syn|rst|ack) == syn`` (a connection request).
- ``drop_synack``: ``tcp flags & (fin|syn|rst|ack) == syn|ack``.
- ``drop_pure_ack``: ``tcp flags & F == ack`` AND no payload. nft 1.0.6 has no "TCP payload
  length", so the hold chain first ``return``s (lets through) every segment whose IP length is
  not exactly its headers: IPv4 needs ``ip hdrlength 5`` and ``ip length == 20 + 4 * doff``,
  IPv6 needs ``ip6 nexthdr tcp`` and ``ip6 length == 4 * doff``, one rule per ``tcp doff``
  5..15. (A concatenation ``tcp doff . ip length`` set loads but crashes ``nft list`` 1.0.6.)
- ``drop_ack_of_fin``: exactly the ``drop_pure_ack`` match. nft cannot tell which byte an ACK
  acknowledges, so "the ACK of our FIN" is any pure ACK on the port: install it just before the
  close whose FIN it should catch, in the namespace of the side that sends the FIN. A peer that
  answers with FIN|ACK (closing at once) is not a pure ACK and is not matched.
- ``drop_fin``: ``tcp flags & fin == fin`` (any FIN, with or without data or ACK).
- ``drop_rst``: ``tcp flags & rst == rst`` (the stale-SYN lab holds the RST that would end the
  server's half-open request, so its SYN_RECV can be seen).
- ``drop_all``: every TCP segment on the port (no flag test): the end behind it has vanished
  as far as the other end can tell (a peer whose machine died, a cable pulled); its own kernel
  still keeps its sockets.
- ``hold_fin``: the ``drop_fin`` match, meant to last until ``release`` (``count`` must be
  None): the sender's FIN retransmission (~200 ms, doubling) delivers it after release.

``count=N`` drops only the first N matching segments: the drop rule carries
``numgen inc mod 4294967295 < N``; the numgen counter of that rule counts only segments that
passed every earlier test, starting at 0, so exactly the first N are dropped (verified: a held
SYN with count 1 leaves the counter at 1 and the connection completes at the retransmit).
``quota`` was rejected: it counts bytes, not packets.

A release at an instant (``release(handle, at=EPOCH_S)``): the drop rule is replaced, in one
transaction, by the same rule guarded by ``meta time < AT`` (the kernel's real-time clock, whole
seconds: the resolution ``nft`` 1.0.6 parses). Holds in two namespaces released with the same
``at`` stop dropping at the same instant of the one kernel clock, however far apart the two
``nft`` calls ran: what lets two held FINs go on the very same retransmission tick (the
simultaneous-close lab). A plain ``release`` empties the chain at once.

The port filter matches ``tcp sport P`` or ``tcp dport P`` (``direction="any"``), or only one of
them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from handshake_lab import tools
from handshake_lab.errors import MissingDependencyError, NetworkError
from handshake_lab.signals import raise_if_interrupted
from handshake_lab.topo.netns import netns_exec_argv
from handshake_lab.topo.registry import is_owned_name, nft_table_name

MISSING_NFT = "nft not found: install nftables (Debian/Ubuntu: apt install nftables)"
NFT_TIMEOUT = 5.0

Hook = Literal["input", "output"]
Direction = Literal["any", "sport", "dport"]

_FLAG_MASK = "fin|syn|rst|psh|ack|urg"
_NUMGEN_MOD = 4294967295


class HoldKind(StrEnum):
    """What a hold drops; see the module docstring for the exact nft match of each."""

    DROP_SYN = "drop_syn"
    DROP_SYNACK = "drop_synack"
    DROP_PURE_ACK = "drop_pure_ack"
    DROP_FIN = "drop_fin"
    DROP_ACK_OF_FIN = "drop_ack_of_fin"
    HOLD_FIN = "hold_fin"
    DROP_RST = "drop_rst"
    DROP_ALL = "drop_all"


_FLAG_MATCH: dict[HoldKind, str] = {
    HoldKind.DROP_SYN: "tcp flags & (fin|syn|rst|ack) == syn",
    HoldKind.DROP_SYNACK: "tcp flags & (fin|syn|rst|ack) == syn|ack",
    HoldKind.DROP_PURE_ACK: f"tcp flags & ({_FLAG_MASK}) == ack",
    HoldKind.DROP_ACK_OF_FIN: f"tcp flags & ({_FLAG_MASK}) == ack",
    HoldKind.DROP_FIN: "tcp flags & fin == fin",
    HoldKind.HOLD_FIN: "tcp flags & fin == fin",
    HoldKind.DROP_RST: "tcp flags & rst == rst",
    HoldKind.DROP_ALL: "",
}

_NEEDS_EMPTY_PAYLOAD = frozenset({HoldKind.DROP_PURE_ACK, HoldKind.DROP_ACK_OF_FIN})


_MATCH_MASK: dict[HoldKind, tuple[frozenset[str], frozenset[str]]] = {
    # kind -> (flags looked at, the flags among them that must be set), as in _FLAG_MATCH
    HoldKind.DROP_SYN: (frozenset({"FIN", "SYN", "RST", "ACK"}), frozenset({"SYN"})),
    HoldKind.DROP_SYNACK: (frozenset({"FIN", "SYN", "RST", "ACK"}), frozenset({"SYN", "ACK"})),
    HoldKind.DROP_PURE_ACK: (
        frozenset({"FIN", "SYN", "RST", "PSH", "ACK", "URG"}),
        frozenset({"ACK"}),
    ),
    HoldKind.DROP_ACK_OF_FIN: (
        frozenset({"FIN", "SYN", "RST", "PSH", "ACK", "URG"}),
        frozenset({"ACK"}),
    ),
    HoldKind.DROP_FIN: (frozenset({"FIN"}), frozenset({"FIN"})),
    HoldKind.HOLD_FIN: (frozenset({"FIN"}), frozenset({"FIN"})),
    HoldKind.DROP_RST: (frozenset({"RST"}), frozenset({"RST"})),
    HoldKind.DROP_ALL: (frozenset(), frozenset()),
}


def hold_matches(kind: HoldKind | str, flags: str, payload_len: int) -> bool:
    """Whether a segment (flags as ``"FIN,ACK"``, its payload length) is one ``kind`` drops:
    the same test the nft rule of ``hold_script`` makes, in Python, to mark captured segments
    as dropped (the port and hook are the caller's to check)."""
    hold_kind = HoldKind(kind)
    looked_at, wanted = _MATCH_MASK[hold_kind]
    present = {name.strip().upper() for name in flags.split(",") if name.strip()}
    if present & looked_at != wanted:
        return False
    return payload_len == 0 or hold_kind not in _NEEDS_EMPTY_PAYLOAD


@dataclass(frozen=True)
class HoldHandle:
    """One installed hold: where it is and the names needed to read and release it."""

    netns: str
    table: str
    chain: str
    kind: HoldKind
    port: int
    count: int | None
    hook: Hook
    direction: Direction

    @property
    def counter(self) -> str:
        """The named counter of the drop rule (same name as the hold's chain)."""
        return self.chain


def _payload_guard() -> list[str]:
    """``return`` rules that let through any segment carrying payload (see docstring)."""
    rules = [
        "meta nfproto ipv4 ip hdrlength != 5 return",
        "meta nfproto ipv6 ip6 nexthdr != tcp return",
    ]
    for doff in range(5, 16):
        rules.append(f"tcp doff {doff} ip length != {20 + 4 * doff} return")
        rules.append(f"tcp doff {doff} ip6 length != {4 * doff} return")
    return rules


def _drop_rule(table: str, chain: str, count: int | None, until: int | None) -> str:
    """The hold chain's last rule: count and drop (the first ``count``; before ``until``)."""
    limit = f"numgen inc mod {_NUMGEN_MOD} < {count} " if count is not None else ""
    before = f"meta time < {until} " if until is not None else ""
    return f'add rule inet {table} {chain} {before}{limit}counter name "{chain}" drop'


def _chain_rules(
    table: str, chain: str, kind: HoldKind, count: int | None, until: int | None
) -> list[str]:
    rules = []
    if kind in _NEEDS_EMPTY_PAYLOAD:
        rules += [f"add rule inet {table} {chain} {rule}" for rule in _payload_guard()]
    rules.append(_drop_rule(table, chain, count, until))
    return rules


def hold_script(
    table: str,
    chain: str,
    kind: HoldKind,
    port: int,
    count: int | None = None,
    hook: Hook = "input",
    direction: Direction = "any",
) -> str:
    """The ``nft -f`` text that installs one hold (pure: tested without nft).

    ``add`` is idempotent for the table and base chains, so the first hold in a namespace
    creates them and later ones reuse them; the whole script is one atomic transaction.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1..65535")
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1 or None, not {count}")
    if kind is HoldKind.HOLD_FIN and count is not None:
        raise ValueError("hold_fin holds until release; use drop_fin with a count")
    if hook not in ("input", "output"):
        raise ValueError(f"hook must be input or output, not {hook!r}")
    ports = {"any": ["sport", "dport"], "sport": ["sport"], "dport": ["dport"]}[direction]
    lines = [
        f"add table inet {table}",
        f"add chain inet {table} {hook} "
        f"{{ type filter hook {hook} priority filter; policy accept; }}",
        f"add counter inet {table} {chain}",
        f"add chain inet {table} {chain}",
    ]
    lines += _chain_rules(table, chain, kind, count, None)
    lines += [
        " ".join(
            part
            for part in (f"add rule inet {table} {hook} tcp {which} {port}", _FLAG_MATCH[kind])
            if part
        )
        + f" jump {chain}"
        for which in ports
    ]
    return "\n".join(lines) + "\n"


def _nft(netns: str, args: list[str], stdin: str | None = None) -> str:
    """Run ``nft ARGS`` inside ``netns``; translate every failure into the error tree."""
    if not is_owned_name(netns):
        raise ValueError(f"refusing to run nft in namespace {netns!r}: not one of ours")
    nft = tools.find("nft")  # /usr/sbin too: a normal Debian PATH lacks it
    if nft is None:
        raise MissingDependencyError(tools.missing("nft"))
    argv = netns_exec_argv(netns, [nft, *args])
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
        )
    except FileNotFoundError as error:
        raise MissingDependencyError(tools.missing("ip")) from error
    except subprocess.TimeoutExpired as error:
        raise NetworkError(f"nft in {netns} did not finish in {NFT_TIMEOUT:g} s") from error
    if done.returncode != 0:
        raise_if_interrupted(done.returncode, "nft")
        detail = done.stderr.strip().splitlines()
        raise NetworkError(
            f"nft {' '.join(args)} in {netns} failed: {detail[0] if detail else done.returncode}"
        )
    return done.stdout


def add_hold(
    ns: str,
    kind: HoldKind | str,
    port: int,
    count: int | None = None,
    *,
    hook: Hook = "input",
    direction: Direction = "any",
) -> HoldHandle:
    """Install a hold in namespace ``ns`` (one of ours) and return its handle.

    The table is named after the namespace, which the run's registry recorded before creating
    it, and is removed with the namespace; ``remove_holds`` removes it earlier.
    """
    hold_kind = HoldKind(kind)
    table = nft_table_name(ns)
    chain = f"h_{secrets.token_hex(3)}"
    script = hold_script(table, chain, hold_kind, port, count, hook, direction)
    _nft(ns, ["-f", "-"], stdin=script)
    return HoldHandle(ns, table, chain, hold_kind, port, count, hook, direction)


def release_script(handle: HoldHandle, at: int | None = None, left: int | None = None) -> str:
    """The ``nft -f`` text that releases a hold now, or at the instant ``at`` (whole seconds
    of the real-time clock): the chain emptied and, for ``at``, its rules put back with a
    ``meta time`` guard, in one transaction (pure: tested without nft). A counted hold's new
    rule drops only the ``left`` drops it had not made yet (a new rule's numgen starts at 0).
    """
    lines = [f"flush chain inet {handle.table} {handle.chain}"]
    if at is not None and (handle.count is None or (left is not None and left > 0)):
        count = left if handle.count is not None else None
        lines += _chain_rules(handle.table, handle.chain, handle.kind, count, at)
    return "\n".join(lines) + "\n"


def release(handle: HoldHandle, at: int | None = None) -> None:
    """Stop dropping: empty the hold's chain, so its jumps fall straight back, at once or (with
    ``at``) at that instant of the kernel's real-time clock. Idempotent.

    The chain and its counter stay, so ``dropped`` still reports the final count.
    """
    left = None
    if at is not None and handle.count is not None:
        left = handle.count - dropped(handle)
    _nft(handle.netns, ["-f", "-"], stdin=release_script(handle, at, left))


def dropped(handle: HoldHandle) -> int:
    """How many segments the hold has dropped, read from its named counter."""
    text = _nft(handle.netns, ["-j", "list", "counter", "inet", handle.table, handle.counter])
    return counter_packets(text, handle.counter, handle.netns)


def counter_packets(text: str, counter: str, where: str) -> int:
    """The packet count in ``nft -j list counter`` output (pure: tested without nft)."""
    try:
        for item in json.loads(text)["nftables"]:
            if "counter" in item:
                packets = item["counter"]["packets"]
                if isinstance(packets, int):
                    return packets
    except (ValueError, KeyError, TypeError) as error:
        raise NetworkError(f"cannot read nft counter {counter}: {error}") from error
    raise NetworkError(f"nft counter {counter} not found in {where}")


def remove_holds(ns: str) -> bool:
    """Delete this tool's table in ``ns`` (every hold there); True if it existed."""
    try:
        _nft(ns, ["delete", "table", "inet", nft_table_name(ns)])
    except NetworkError:
        return False
    return True


__all__ = [
    "MISSING_NFT",
    "HoldHandle",
    "HoldKind",
    "add_hold",
    "counter_packets",
    "dropped",
    "hold_script",
    "release",
    "release_script",
    "remove_holds",
]
