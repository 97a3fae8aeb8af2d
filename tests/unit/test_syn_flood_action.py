"""The ``syn_flood`` action without a kernel: its wait ends when every SYN is accounted for, as a
request socket, a drop or a cookie (not at the first table read, which may come before the
kernel has seen them all), and its fact is the request count the sources agree on.

The lab's own figures follow the rule measured on the kernel (the SYN queue holds backlog + 1
requests; without cookies, also no more than tcp_max_syn_backlog - tcp_max_syn_backlog / 4 + 1
for unknown peers), so a lab edit that breaks the arithmetic fails here, before any run."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import cast

from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.sides import ClientSide, ServerSide, Snapshot
from handshake_lab.observe.base import Address
from handshake_lab.observe.fake import make_record
from handshake_lab.placement import Topology
from handshake_lab.spec.loader import builtin_dir, load_lab
from handshake_lab.spec.model import Step
from handshake_lab.tcp.states import TcpState

HOST, CLIENT_HOST, PORT = "198.18.0.1", "198.18.0.2", 8080
LAB = load_lab(builtin_dir() / "syn-flood.toml")
# One poll as the server's kernel shows it: requests per source, ListenDrops, SyncookiesSent.
Poll = tuple[Mapping[str, int], int, int]


def step(step_id: str) -> Step:
    return next(s for s in LAB.steps if s.id == step_id)


class FakeServer:
    """Plays one poll per table read (the counters read that follows uses the same poll)."""

    host = HOST

    def __init__(self, polls: Sequence[Poll]) -> None:
        self.polls = list(polls)
        self.reads = 0
        self.current = self.polls[0]

    async def snapshot(self, ports: Collection[int], *, fast: bool = False) -> Snapshot:
        self.current = self.polls[min(self.reads, len(self.polls) - 1)]
        self.reads += 1
        return {
            source: [
                make_record(
                    source, TcpState.SYN_RECV, f"{HOST}:{PORT}", f"{CLIENT_HOST}:{40000 + i}"
                )
                for i in range(n)
            ]
            + [make_record(source, TcpState.LISTEN, f"{HOST}:{PORT}")]
            for source, n in self.current[0].items()
        }

    async def ns_op(self, op: str, args: Mapping[str, object]) -> object:
        assert op == "counters"
        _, drops, cookies = self.current
        return {"TcpExt.ListenDrops": drops, "TcpExt.SyncookiesSent": cookies, "Tcp.X": 1}


class FakeClients:
    def __init__(self) -> None:
        self.sent: list[int] = []

    async def syn_flood(
        self, name: str, server: Address, seqs: Sequence[int]
    ) -> tuple[str, list[int]]:
        assert server == Address(HOST, PORT)
        self.sent = list(seqs)
        return "ok", [50000 + i for i in range(len(seqs))]


def flood(polls: Sequence[Poll], the_step: Step) -> tuple[dict[str, object], FakeServer]:
    server = FakeServer(polls)
    clients = FakeClients()
    run = LabRun(
        LAB,
        RunOptions(topology=Topology.NETNS, host=HOST),
        [],
        lambda event: None,
        server=cast(ServerSide, server),
        clients=cast(ClientSide, clients),
    )
    run.ports = {"main": PORT, "alt": PORT, "cookies": PORT}
    outcome, data, facts = asyncio.run(run._act_syn_flood(the_step))
    assert (outcome, data) == ("ok", None)
    assert len(clients.sent) == the_step.args["count"] == facts["sent"]
    return facts, server


BOTH = ("ss", "psutil")


def test_the_flood_waits_until_the_kernel_has_dealt_with_every_syn() -> None:
    # Before; then a read that has seen 3 of 12; then all: 7 requests, 5 drops.
    polls: list[Poll] = [
        (dict.fromkeys(BOTH, 0), 0, 0),
        (dict.fromkeys(BOTH, 3), 0, 0),
        (dict.fromkeys(BOTH, 7), 4, 0),
        (dict.fromkeys(BOTH, 7), 5, 0),
        (dict.fromkeys(BOTH, 7), 5, 0),
    ]
    facts, server = flood(polls, step("flood"))
    assert facts["syn_recv"] == 7
    assert server.reads == 4  # stopped at the first read that accounts for all 12


def test_cookies_count_as_dealt_with_and_requests_before_the_flood_do_not() -> None:
    polls: list[Poll] = [
        (dict.fromkeys(BOTH, 7), 5, 0),  # the first flood's requests and drops
        (dict.fromkeys(BOTH, 9), 5, 3),
        (dict.fromkeys(BOTH, 9), 5, 4),
    ]
    # A flood of 6 into a listener that holds 7 requests already: 2 more requests, 4 cookies.
    again = step("flood-again")
    facts, server = flood(polls, dataclasses.replace(again, args={**again.args, "count": 6}))
    assert facts["syn_recv"] == 9
    assert server.reads == 3


def test_sources_that_disagree_are_read_again() -> None:
    polls: list[Poll] = [
        (dict.fromkeys(BOTH, 0), 0, 0),
        ({"ss": 7, "psutil": 6}, 5, 0),
        (dict.fromkeys(BOTH, 7), 5, 0),
    ]
    facts, server = flood(polls, step("flood"))
    assert facts["syn_recv"] == 7
    assert server.reads == 3


def test_a_flood_never_accounted_for_ends_at_the_timeout_with_what_was_read() -> None:
    # Requests reset as they come (no hold on the RSTs): 12 SYNs never add up.
    polls: list[Poll] = [(dict.fromkeys(BOTH, 0), 0, 0), (dict.fromkeys(BOTH, 2), 5, 0)]
    short = dataclasses.replace(step("flood"), timeout=0.05)
    facts, server = flood(polls, short)
    assert facts["syn_recv"] == 2
    assert server.reads >= 2


def number(value: object) -> int:
    assert isinstance(value, int), value
    return value


def test_the_labs_figures_follow_the_measured_queue_rule() -> None:
    assert step("small-syn-backlog").args["key"] == "net.ipv4.tcp_max_syn_backlog"
    max_syn_backlog = number(step("small-syn-backlog").args["value"])
    backlog = number(step("listen").args["backlog"])
    assert step("listen-alt").args["backlog"] == step("listen-cookies").args["backlog"] == backlog
    without_cookies = min(backlog + 1, max_syn_backlog - max_syn_backlog // 4 + 1)
    with_cookies = backlog + 1
    first, second = step("flood"), step("flood-again")
    assert first.facts["syn_recv"] == without_cookies < number(first.args["count"])
    assert second.facts["syn_recv"] == with_cookies
    assert without_cookies < with_cookies  # room for the held client once cookies are on
    # The second flood goes to a listener of its own, whose queue starts empty: the first
    # listener's requests may be gone by then (a queue over half full shortens their life).
    assert second.args["port"] == step("listen-cookies").args["port"] == "cookies"
    assert step("cookie-client").args["port"] == "cookies"
    cookies = number(second.args["count"]) - with_cookies
    assert step("cookies-counted").facts["TcpExt.SyncookiesSent"] == cookies + 1
    assert step("flood-empty").facts["syn_recv"] == 0
    empty = number(step("flood-empty").args["count"])
    assert step("always-counted").facts["TcpExt.SyncookiesSent"] == cookies + 1 + empty + 1
