"""``--delay``/``--loss``: the netem arguments each veth end gets, where they are refused, and
the sweep's delay list. No kernel objects here (tests/integration/test_netem_cli.py runs them)."""

from __future__ import annotations

import pytest

from handshake_lab.errors import ExitStatus, NetemUnavailableError
from handshake_lab.lab.sweep import parse_delays
from handshake_lab.placement.place import link_refusal
from handshake_lab.placement.topology import Topology
from handshake_lab.topo.netem import Link


def test_the_whole_rtt_goes_on_the_servers_end_in_microseconds() -> None:
    link = Link(rtt_ms=50.5)
    assert link.netem_args("server") == ["delay", "50500us"]
    assert link.netem_args("client") == [], "the client's segments leave at once"
    assert link.record() == {"rtt_ms": 50.5, "loss_pct": 0.0}


def test_loss_goes_on_both_ends_and_delay_only_on_the_servers() -> None:
    link = Link(rtt_ms=200, loss_pct=2.5)
    assert link.netem_args("server") == ["delay", "200000us", "loss", "2.5%"]
    assert link.netem_args("client") == ["loss", "2.5%"]


def test_a_zero_link_changes_nothing() -> None:
    link = Link()
    assert not link.active
    assert link.netem_args("server") == link.netem_args("client") == []
    assert Link(loss_pct=1).active
    assert Link(rtt_ms=0.001).active


@pytest.mark.parametrize(
    ("rtt", "loss", "words"),
    [(-1, 0, "--delay must be 0 to 60000 ms"), (60001, 0, "--delay"), (0, 101, "--loss must")],
)
def test_out_of_range_values_are_refused_with_the_option_named(
    rtt: float, loss: float, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        Link(rtt_ms=rtt, loss_pct=loss)


def test_loopback_and_peer_are_refused_and_namespaces_are_not() -> None:
    loopback = link_refusal(Topology.LOOPBACK)
    assert loopback is not None
    assert "never this machine's lo" in loopback
    peer = link_refusal(Topology.REMOTE)
    assert peer is not None
    assert "--peer" in peer
    assert link_refusal(Topology.NETNS) is None
    assert link_refusal(Topology.NETNS_AGENT) is None


def test_no_netem_is_its_own_exit_code() -> None:
    assert NetemUnavailableError("x").exit_status is ExitStatus.NETEM_UNAVAILABLE
    assert int(ExitStatus.NETEM_UNAVAILABLE) == 13


def test_a_delay_list_is_parsed_in_order() -> None:
    assert parse_delays("0, 10,50,200") == [0.0, 10.0, 50.0, 200.0]
    assert parse_delays("12.5") == [12.5]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0,fast", "'fast' is not a number"),
        ("0,,50", "'' is not a number"),
        ("50,50", "50 ms twice"),
        ("0,-5", "--delay must be 0 to"),
    ],
)
def test_a_bad_delay_list_names_the_bad_item(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_delays(text)
