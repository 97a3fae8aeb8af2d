"""``play --topology netns`` (root): the typed half-close across the veth, a dropped FIN proved
by the capture and the nft counter, and saved sessions that re-run agreeing, on both loops."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab.placement import Topology
from handshake_lab.spec.authoring import check_file
from handshake_lab.spec.loader import load_lab
from tests.integration.play_support import HALF_CLOSE, play_lines, rerun, states
from tests.integration.test_play import check_half_close

pytestmark = pytest.mark.root

DROPPED_FIN = [
    "connect",
    "drop next fin from client",
    "shutdown client",
    "wait 2",
    "recv server",
    "close server",
]


def test_a_typed_half_close_in_namespaces(loop_name: str) -> None:
    session = play_lines(HALF_CLOSE, loop_name, Topology.NETNS)
    check_half_close(session.steps[1:])
    hello = session.steps[2]
    assert [s["label"].split()[0] for s in hello.segments] == ["PSH,ACK", "ACK"]


def test_a_dropped_fin_is_marked_and_counted_then_resent(loop_name: str, tmp_path: Path) -> None:
    path = tmp_path / "lost-fin.toml"
    session = play_lines([*DROPPED_FIN, f"save {path}"], loop_name, Topology.NETNS)
    assert "play: hold h1: drop_fin at the server's input, the next 1" in session.said
    shutdown = session.steps[3]
    assert shutdown.action == "send_eof"
    assert states(shutdown) == {
        "listener": "LISTEN",
        "client": "FIN_WAIT1",
        "server": "ESTABLISHED",
    }
    assert shutdown.agrees, shutdown.mismatches  # the model predicted the drop
    assert "dropped by hold h1: FIN+ACK client -> server" in shutdown.explanation["en"]
    fins = [s for s in shutdown.segments if "FIN" in s["label"]]
    assert [(f["dropped"], f["hold"]) for f in fins] == [(True, "h1")]
    assert shutdown.holds["h1"]["dropped"] == 1
    assert shutdown.facts["dropped.h1"] == 1
    # The kernel resends the FIN on its timer: the model says it cannot tell when.
    waited = session.steps[4]
    assert waited.expected == {}
    assert "cannot predict" in waited.explanation["en"]
    assert states(waited)["client"] == "FIN_WAIT2"
    assert states(waited)["server"] == "CLOSE_WAIT"
    resent = [s for s in waited.segments if "FIN" in s["label"]]
    assert resent
    assert not resent[0]["dropped"]
    assert session.steps[5].outcome == "EOF"
    assert states(session.steps[6])["client"] == "TIME_WAIT"
    assert check_file(str(path)).problems == []  # 'lab check'
    lab = load_lab(path)
    assert lab.topologies == ("netns",)
    assert lab.steps[3].facts == {"dropped.h1": 1}
    record = rerun(lab, loop_name, Topology.NETNS)
    assert record.result is not None
    assert record.result.passed, [s.mismatches for s in record.steps]
    for played, again in zip(session.steps, record.steps, strict=True):
        assert states(again) == states(played), again.id


def test_a_held_fin_stays_held_until_released(loop_name: str, tmp_path: Path) -> None:
    path = tmp_path / "held.toml"
    lines = [
        "connect",
        "hold hold_fin at server",
        "close client",
        "wait 1",
        "release h1",
        "wait 2",
        f"save {path}",
    ]
    session = play_lines(lines, loop_name, Topology.NETNS)
    held = session.steps[4]
    assert held.expected["client"] == "FIN_WAIT1"  # predicted: the hold drops every resend
    assert held.agrees, held.mismatches
    assert held.holds["h1"]["dropped"] >= 1
    released = session.steps[5]
    assert released.expected == {}
    after = session.steps[6]
    assert states(after)["client"] == "FIN_WAIT2"
    assert states(after)["server"] == "CLOSE_WAIT"
    assert check_file(str(path)).problems == []
    record = rerun(load_lab(path), loop_name, Topology.NETNS)
    assert record.result is not None
    assert record.result.passed, [s.mismatches for s in record.steps]
