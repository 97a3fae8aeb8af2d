"""The nft text each hold kind installs (pure: no nft, no namespace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab.errors import MissingDependencyError
from handshake_lab.topo.nft import (
    HoldHandle,
    HoldKind,
    add_hold,
    hold_matches,
    hold_script,
    release_script,
)

T, C = "hslab_1_abcd_srv", "h_abc123"


def _jumps(script: str) -> list[str]:
    return [line for line in script.splitlines() if "jump" in line]


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        (HoldKind.DROP_SYN, "tcp flags & (fin|syn|rst|ack) == syn"),
        (HoldKind.DROP_SYNACK, "tcp flags & (fin|syn|rst|ack) == syn|ack"),
        (HoldKind.DROP_PURE_ACK, "tcp flags & (fin|syn|rst|psh|ack|urg) == ack"),
        (HoldKind.DROP_ACK_OF_FIN, "tcp flags & (fin|syn|rst|psh|ack|urg) == ack"),
        (HoldKind.DROP_FIN, "tcp flags & fin == fin"),
        (HoldKind.HOLD_FIN, "tcp flags & fin == fin"),
    ],
)
def test_each_kind_jumps_on_its_flags_for_both_port_directions(kind: HoldKind, match: str) -> None:
    assert _jumps(hold_script(T, C, kind, 5000)) == [
        f"add rule inet {T} input tcp sport 5000 {match} jump {C}",
        f"add rule inet {T} input tcp dport 5000 {match} jump {C}",
    ]


def test_drop_all_jumps_on_every_segment_of_the_port_and_matches_any_flags() -> None:
    assert _jumps(hold_script(T, C, HoldKind.DROP_ALL, 5000)) == [
        f"add rule inet {T} input tcp sport 5000 jump {C}",
        f"add rule inet {T} input tcp dport 5000 jump {C}",
    ]
    for flags, length in (("ACK", 0), ("PSH,ACK", 12), ("RST,ACK", 0), ("SYN", 0), ("FIN", 0)):
        assert hold_matches(HoldKind.DROP_ALL, flags, length)
    assert not hold_matches(HoldKind.DROP_RST, "ACK", 0)


def test_the_drop_rule_counts_into_the_named_counter() -> None:
    script = hold_script(T, C, HoldKind.DROP_SYN, 5000)
    assert f"add counter inet {T} {C}" in script
    assert script.splitlines()[-3] == f'add rule inet {T} {C} counter name "{C}" drop'


def test_count_limits_the_drop_rule_with_numgen() -> None:
    script = hold_script(T, C, HoldKind.DROP_SYN, 5000, count=1)
    assert f'add rule inet {T} {C} numgen inc mod 4294967295 < 1 counter name "{C}" drop' in (
        script.splitlines()
    )


def test_pure_ack_kinds_let_every_segment_with_payload_return() -> None:
    script = hold_script(T, C, HoldKind.DROP_PURE_ACK, 5000)
    assert f"add rule inet {T} {C} tcp doff 8 ip length != 52 return" in script
    assert f"add rule inet {T} {C} tcp doff 5 ip6 length != 20 return" in script
    assert f"add rule inet {T} {C} meta nfproto ipv4 ip hdrlength != 5 return" in script
    assert "return" not in hold_script(T, C, HoldKind.DROP_SYN, 5000)


def test_hook_and_direction_are_honoured() -> None:
    script = hold_script(T, C, HoldKind.DROP_FIN, 80, hook="output", direction="dport")
    assert "type filter hook output priority filter; policy accept;" in script
    assert _jumps(script) == [
        f"add rule inet {T} output tcp dport 80 tcp flags & fin == fin jump {C}"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "out of range"),
        ({"port": 70000}, "out of range"),
        ({"count": 0}, "count"),
        ({"kind": HoldKind.HOLD_FIN, "count": 1}, "until release"),
    ],
)
def test_bad_holds_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"kind": HoldKind.DROP_SYN, "port": 5000, **kwargs}
    with pytest.raises(ValueError, match=message):
        hold_script(T, C, args["kind"], args["port"], args.get("count"))  # type: ignore[arg-type]


def test_missing_nft_is_a_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HSLAB_SYSTEM_DIRS", "")  # not in /usr/sbin either: really missing
    with pytest.raises(MissingDependencyError, match=r"nft not found .*apt install nftables"):
        add_hold("hslab-1-abcd-srv", "drop_syn", 5000)


def test_holds_refuse_namespaces_that_are_not_ours() -> None:
    with pytest.raises(ValueError, match="not one of ours"):
        add_hold("blue", HoldKind.DROP_SYN, 5000)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="drop_everything"):
        add_hold("hslab-1-abcd-srv", "drop_everything", 5000)


def _handle(kind: HoldKind, count: int | None = None) -> HoldHandle:
    return HoldHandle("hslab-1-abcd-srv", T, C, kind, 5000, count, "input", "any")


def test_a_release_now_empties_the_chain_and_nothing_else() -> None:
    assert release_script(_handle(HoldKind.HOLD_FIN)) == f"flush chain inet {T} {C}\n"


def test_a_release_at_an_instant_puts_the_rules_back_guarded_by_meta_time() -> None:
    script = release_script(_handle(HoldKind.DROP_PURE_ACK), at=1_800_000_000)
    lines = script.splitlines()
    assert lines[0] == f"flush chain inet {T} {C}"  # one transaction: flush, then re-add
    whole = hold_script(T, C, HoldKind.DROP_PURE_ACK, 5000)
    guards = [line for line in whole.splitlines() if line.endswith(" return")]
    assert lines[1:-1] == guards  # the payload guard comes back unchanged
    assert lines[-1] == (f'add rule inet {T} {C} meta time < 1800000000 counter name "{C}" drop')


def test_a_counted_hold_released_at_an_instant_drops_only_what_it_has_left() -> None:
    handle = _handle(HoldKind.DROP_FIN, count=3)
    script = release_script(handle, at=1_800_000_000, left=2)
    assert "meta time < 1800000000 numgen inc mod 4294967295 < 2 counter" in script
    # A counted hold that has made all its drops has nothing left to put back.
    assert release_script(handle, at=1_800_000_000, left=0) == f"flush chain inet {T} {C}\n"
