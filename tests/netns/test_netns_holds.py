"""nft holds inside a pair: each drop is proved by its counter and the kernel state it holds."""

from __future__ import annotations

import socket

import pytest

from handshake_lab.topo.netns import in_netns
from handshake_lab.topo.nft import HoldKind, add_hold, dropped, release, remove_holds
from handshake_lab.topo.pair import NetnsPair
from tests.netns.helpers import listener, poll_until, raw_states, ss_states, start_connect

pytestmark = pytest.mark.root

PORT = 5001


def test_drop_syn_keeps_the_client_in_syn_sent_until_released(pair: NetnsPair) -> None:
    hold = add_hold(pair.server_ns, HoldKind.DROP_SYN, PORT)
    with (
        listener(pair.server_ns, pair.server_addr, PORT),
        start_connect(pair.client_ns, pair.server_addr, PORT),
    ):
        poll_until(lambda: raw_states(pair.client_ns, PORT) == {"SYN-SENT"}, what="SYN-SENT")
        poll_until(lambda: dropped(hold) >= 1, what="the SYN drop counted")
        assert raw_states(pair.server_ns, PORT) == {"LISTEN"}
        release(hold)
        # The next SYN retransmit (+1 s, +2 s ... after the first) completes the handshake.
        poll_until(lambda: raw_states(pair.client_ns, PORT) == {"ESTAB"}, timeout=10, what="ESTAB")
    release(hold)  # idempotent


def test_drop_pure_ack_gives_server_syn_recv_while_client_is_established(
    pair: NetnsPair,
) -> None:
    hold = add_hold(pair.server_ns, HoldKind.DROP_PURE_ACK, PORT, direction="dport")
    with (
        listener(pair.server_ns, pair.server_addr, PORT),
        start_connect(pair.client_ns, pair.server_addr, PORT),
    ):
        poll_until(lambda: raw_states(pair.client_ns, PORT) == {"ESTAB"}, what="client ESTAB")
        poll_until(
            lambda: raw_states(pair.server_ns, PORT) == {"LISTEN", "SYN-RECV"},
            what="server SYN-RECV",
        )
        assert dropped(hold) >= 1


def test_drop_syn_once_drops_exactly_one_segment(pair: NetnsPair) -> None:
    hold = add_hold(pair.server_ns, HoldKind.DROP_SYN, PORT, count=1)
    with listener(pair.server_ns, pair.server_addr, PORT) as server:
        for _ in range(2):
            with in_netns(pair.client_ns):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with client:
                client.settimeout(10)
                client.connect((pair.server_addr, PORT))  # first one after one retransmit
                server.settimeout(5)
                server.accept()[0].close()
    assert dropped(hold) == 1


def test_drop_ack_of_fin_keeps_the_closer_in_fin_wait1(pair: NetnsPair) -> None:
    with listener(pair.server_ns, pair.server_addr, PORT) as server:
        client = start_connect(pair.client_ns, pair.server_addr, PORT)
        poll_until(lambda: raw_states(pair.client_ns, PORT) == {"ESTAB"}, what="client ESTAB")
        server.settimeout(5)
        accepted, _ = server.accept()
        hold = add_hold(pair.client_ns, HoldKind.DROP_ACK_OF_FIN, PORT, direction="sport")
        client.close()
        poll_until(
            lambda: raw_states(pair.server_ns, PORT) == {"LISTEN", "CLOSE-WAIT"},
            what="server CLOSE-WAIT",
        )
        poll_until(lambda: dropped(hold) >= 1, what="the ACK of the FIN dropped")
        assert raw_states(pair.client_ns, PORT) == {"FIN-WAIT-1"}
        accepted.close()


def test_hold_fin_then_release_lets_the_fin_through(pair: NetnsPair) -> None:
    with listener(pair.server_ns, pair.server_addr, PORT) as server:
        client = start_connect(pair.client_ns, pair.server_addr, PORT)
        poll_until(lambda: raw_states(pair.client_ns, PORT) == {"ESTAB"}, what="client ESTAB")
        server.settimeout(5)
        accepted, _ = server.accept()
        hold = add_hold(pair.server_ns, HoldKind.HOLD_FIN, PORT)
        with client:
            client.shutdown(socket.SHUT_WR)
            poll_until(lambda: dropped(hold) >= 1, what="FIN dropped")
            server_side = {r.raw_state for r in ss_states(pair.server_ns, PORT)}
            assert server_side == {"LISTEN", "ESTAB"}
            release(hold)
            poll_until(
                lambda: "CLOSE-WAIT" in raw_states(pair.server_ns, PORT),
                timeout=10,
                what="server CLOSE-WAIT after release",
            )
        accepted.close()


def test_remove_holds_deletes_the_table(pair: NetnsPair) -> None:
    add_hold(pair.server_ns, "drop_syn", PORT)
    assert remove_holds(pair.server_ns)
    assert not remove_holds(pair.server_ns)
