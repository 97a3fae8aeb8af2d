"""The labs that hold states still with nftables (root): run each in namespaces, in-process,
with packets captured and transitions traced, on asyncio and uvloop.

Grading states is not enough here: each lab's lesson is a segment that was dropped, resent or
answered, so these tests check the segments on the wire, the nft counters and the wire checks
(what the run prints after its steps), not only that every step agreed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from handshake_lab.lab.evidence import Evidence, evidence_for
from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.defaults import default_observers
from handshake_lab.placement import Topology
from handshake_lab.placement.place import place
from handshake_lab.spec.loader import builtin_dir, load_lab
from handshake_lab.spec.model import ABSENT, Lab
from tests import needs
from tests.integration.labrun import Recorded

pytestmark = pytest.mark.root

Segment = dict[str, Any]


@dataclass
class HeldRun:
    lab: Lab
    recorded: Recorded
    evidence: Evidence

    def segments(self, *step_ids: str) -> list[Segment]:
        """The captured segments reported with these steps (all steps if none given)."""
        ids = step_ids or tuple(self.recorded.steps)
        return [seg for sid in ids for seg in self.recorded.steps[sid].segments]

    def transitions(self) -> list[dict[str, Any]]:
        return [t for report in self.recorded.steps.values() for t in report.transitions]

    def fact(self, step_id: str, key: str) -> Any:
        return self.recorded.steps[step_id].facts.get(key)

    def state(self, step_id: str, side: str) -> str:
        return self.recorded.steps[step_id].observed[side].state

    def checks(self) -> dict[str, list[bool]]:
        out: dict[str, list[bool]] = {}
        for check in self.recorded.result.checks:
            out.setdefault(str(check["name"]), []).append(bool(check["ok"]))
        return out


def run_held(name: str, loop_name: str) -> HeldRun:
    """Run built-in lab ``name`` in the netns topology with capture (required) and trace (if
    the machine has it); assert that every step agreed and that the namespaces are gone."""
    lab = load_lab(builtin_dir() / f"{name}.toml")
    recorded = Recorded()
    with place(Topology.NETNS, lab, default_observers) as ends:
        evidence = evidence_for(ends, capture=True, trace=None, pcap=False)
        assert evidence is not None
        runner = LabRun(
            lab,
            RunOptions(loop=loop_name, topology=Topology.NETNS, host=ends.host),
            ends.observers,
            recorded,
            server=ends.server,
            clients=ends.clients,
            evidence=evidence,
        )
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as r:
            r.run(runner.run())
    assert evidence.capture_on, evidence.notes
    netns_steps = lab.steps_for("netns")
    assert list(recorded.steps) == [s.id for s in netns_steps]
    for step in netns_steps:
        report = recorded.steps[step.id]
        assert report.mismatches == [], (step.id, report.mismatches)
        for side, expected in step.expect.items():
            assert report.observed[side].state == (expected.name if expected else ABSENT)
    assert recorded.result.passed
    return HeldRun(lab, recorded, evidence)


def flagged(segments: list[Segment], flags: str, sender: str | None = None) -> list[Segment]:
    return [s for s in segments if s["flags"] == flags and (sender is None or s["from"] == sender)]


def test_handshake_netns_holds_the_synack_then_the_third_segment(loop_name: str) -> None:
    run = run_held("handshake", loop_name)
    # (a) SYN-ACK dropped at the client: both ends half-way, the server's answer resent.
    assert run.state("synack-dropped", "held") == "SYN_SENT"
    assert run.state("synack-dropped", "server.held") == "SYN_RECV"
    assert run.fact("synack-dropped", "dropped.synack") >= 2
    held_segments = run.segments("synack-dropped", "synack-released")
    synacks = flagged(held_segments, "SYN,ACK", sender="server")
    assert len(synacks) >= 2, held_segments
    assert len({s["seq"] for s in synacks}) == 1  # the same SYN-ACK, seq=k, every time
    syns = flagged(held_segments, "SYN", sender="held")
    assert all(s["ack"] == syns[0]["seq"] + 1 for s in synacks)  # ack=j+1
    assert run.state("synack-released", "held") == "ESTABLISHED"
    # (b) the third segment dropped at the server: client ESTABLISHED, server SYN_RECV.
    assert run.state("ack-dropped", "lazy") == "ESTABLISHED"
    assert run.state("ack-dropped", "server.lazy") == "SYN_RECV"
    assert run.fact("ack-dropped", "dropped.ack") >= 2
    lazy_synacks = flagged(run.segments("ack-dropped"), "SYN,ACK", sender="server")
    assert len(lazy_synacks) >= 2  # resent because its ACK never arrived
    data = [s for s in run.segments("data-completes") if s["from"] == "lazy" and s["len"] == 4]
    assert data
    assert "ACK" in data[0]["flags"].split(",")
    assert run.state("data-completes", "server.lazy") == "ESTABLISHED"
    # The cause of the completion is only in the transition stream: without it, say so
    # (skip; a failure under CI) rather than pass with the check silently dropped.
    needs.require(run.evidence.trace_on, f"no transition stream here: {run.evidence.notes}")
    completed = [
        t
        for t in run.recorded.steps["data-completes"].transitions
        if t["side"] == "server.lazy" and t["new"] == "ESTABLISHED"
    ]
    assert completed, run.transitions()
    assert completed[0]["cause"] == "PSH,ACK", completed


def test_lost_last_ack_fin_is_resent_and_reacknowledged(loop_name: str) -> None:
    run = run_held("lost-last-ack", loop_name)
    # FIN_WAIT1 held: the client's FIN resent while its ACKs were dropped.
    fin_wait1 = run.segments("fin-wait1-held")
    assert len(flagged(fin_wait1, "FIN,ACK", sender="client")) >= 2
    assert run.fact("fin-wait1-held", "dropped.finack") >= 2
    assert run.state("fin-acked", "client") == "FIN_WAIT2"
    # LAST_ACK held until the rule goes: the server resends its FIN (seq=w), the TIME_WAIT end
    # answers every copy with ack=w+1, and every answer but the one after the release is dropped.
    assert run.state("last-ack-held", "server") == "LAST_ACK"
    assert run.state("last-ack-held", "client") == "TIME_WAIT"
    dropped = run.fact("fin-again", "dropped.lastack")
    assert dropped >= 2
    tail = run.segments("last-ack-held", "fin-again")
    fins = flagged(tail, "FIN,ACK", sender="server")
    assert len(fins) == dropped + 1, tail
    assert len({f["seq"] for f in fins}) == 1, tail  # the same FIN, seq=w, resent
    gap_ms = fins[1]["t_ms"] - fins[0]["t_ms"]
    assert 150 <= gap_ms <= 1500, gap_ms  # the retransmission timer, ~200 ms
    acks = [s for s in flagged(tail, "ACK", sender="client") if s["ack"] == fins[0]["seq"] + 1]
    assert len(acks) == len(fins), tail  # the TIME_WAIT side answered every copy
    assert all(ack["t_ms"] > fin["t_ms"] for fin, ack in zip(fins, acks, strict=True))
    assert [ack["dropped"] for ack in acks] == [True] * dropped + [False], tail
    assert run.state("fin-again", "client") == "TIME_WAIT"
    assert run.state("fin-again", "server") == ABSENT
    assert all(run.checks().get("fin.server", [False]))


def test_simultaneous_close_holds_the_server_in_closing_for_ss_and_psutil(
    loop_name: str,
) -> None:
    run = run_held("simultaneous-close", loop_name)
    assert run.state("server-closes", "client") == "FIN_WAIT1"
    assert run.state("server-closes", "server") == "FIN_WAIT1"
    assert run.fact("server-closes", "dropped.fin-to-server") >= 1
    assert run.fact("server-closes", "dropped.fin-to-client") >= 1
    # Each FIN was sent before the other end's FIN arrived: neither acknowledges the other's.
    client_fin = flagged(run.segments("client-closes"), "FIN,ACK", sender="client")[0]
    server_fin = flagged(run.segments("server-closes"), "FIN,ACK", sender="server")[0]
    assert server_fin["ack"] != client_fin["seq"] + 1
    # CLOSING held still, and read by both table sources, not only by the tracepoint.
    closing = run.recorded.steps["server-closing"].observed["server"]
    assert closing.sources == {"ss": "CLOSING", "psutil": "CLOSING"}
    assert run.state("server-closing", "client") == "FIN_WAIT1"
    assert run.fact("server-closing", "dropped.ack-to-client") >= 1
    dropped = [s for s in run.segments("server-closing") if s["dropped"]]
    assert {s["hold"] for s in dropped} >= {"ack-to-client"}
    # The server's later FINs acknowledge u+1, so the client skips CLOSING.
    later = flagged(run.segments("client-time-wait"), "FIN,ACK", sender="server")
    assert later
    assert all(s["ack"] == client_fin["seq"] + 1 for s in later)
    assert run.state("client-time-wait", "client") == "TIME_WAIT"
    assert run.state("client-time-wait", "server") == "CLOSING"
    assert run.state("release", "client") == "TIME_WAIT"
    assert run.state("release", "server") == "TIME_WAIT"


def test_stale_syn_gets_synack_then_rst_and_no_connection(loop_name: str) -> None:
    run = run_held("stale-syn", loop_name)
    seq = run.fact("old-syn", "seq")
    assert isinstance(seq, int)
    ghost = run.segments("old-syn", "rst-arrives")
    syn = flagged(ghost, "SYN", sender="ghost")
    assert [s["seq"] for s in syn] == [seq]
    synacks = flagged(ghost, "SYN,ACK", sender="server")
    assert synacks
    assert all(s["ack"] == (seq + 1) % 2**32 for s in synacks)
    assert len(synacks) >= 2  # the first RST was dropped, so the SYN-ACK was resent
    rsts = [s for s in ghost if "RST" in s["flags"].split(",") and s["from"] == "ghost"]
    assert len(rsts) >= 2, ghost
    assert run.fact("old-syn", "dropped.rst") >= 1
    assert run.state("old-syn", "server.ghost") == "SYN_RECV"
    assert run.state("rst-arrives", "server.ghost") == ABSENT
    checks = run.checks()
    assert checks.get("handshake.reset") == [True], checks
    assert run.state("real-client", "client") == "ESTABLISHED"


def test_port_exhaustion_fails_then_tw_reuse_connects(loop_name: str) -> None:
    run = run_held("port-exhaustion", loop_name)
    steps = run.recorded.steps
    assert run.fact("churn", "connected") == 10
    assert run.fact("churn", "time_wait") == 10
    ports = {int(s["src"].rsplit(":", 1)[1]) for s in flagged(run.segments("churn"), "SYN")}
    assert ports == set(range(40000, 40010))
    assert steps["no-port-left"].outcome == "EADDRNOTAVAIL"
    assert not flagged(run.segments("no-port-left"), "SYN")  # connect() failed before a SYN
    assert steps["reused"].outcome == "ok"
    local = steps["reused"].observed["client"].local
    assert local is not None
    assert 40000 <= int(local.rsplit(":", 1)[1]) <= 40009


def test_syn_backlog_counts_listen_overflows(loop_name: str) -> None:
    run = run_held("syn-backlog", loop_name)
    assert run.fact("counters", "TcpExt.ListenOverflows") >= 2
    assert run.fact("counters", "TcpExt.ListenDrops") >= 2
    dropped = run.segments("syn-dropped")
    assert len(flagged(dropped, "SYN", sender="client")) >= 2
    assert not [s for s in dropped if s["to"] == "client"]  # no answer at all
    assert run.state("accept", "client") == "ESTABLISHED"


def test_simultaneous_open_in_a_namespace(loop_name: str) -> None:
    run = run_held("simultaneous-open", loop_name)
    observed = run.recorded.steps["self-connect"].observed["client"]
    assert observed.state == "ESTABLISHED"
    assert observed.local == observed.remote
    assert run.state("close-itself", "client") == "TIME_WAIT"
    needs.require(run.evidence.trace_on, f"no transition stream here: {run.evidence.notes}")
    states = [(t["old"], t["new"]) for t in run.transitions()]
    assert ("SYN_SENT", "SYN_RECV") in states, states
    assert ("FIN_WAIT1", "CLOSING") in states, states
