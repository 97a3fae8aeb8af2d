"""IPv4-mapped addresses and labs of both families, without sockets.

An IPv6 socket that talks IPv4 (a dual-stack listener's connection from an IPv4 client) is
printed as ``[::ffff:127.0.0.1]:P`` by ss, as ``::ffff:127.0.0.1`` by psutil, and arrives as
16 raw bytes from netlink; its peer, an IPv4 socket, prints ``127.0.0.1``. One normaliser
(``observe.aliases.address``, and netlink's decoder doing the same from bytes) must give them
all the same 4-tuple, and remember the mapped spelling for the views.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from handshake_lab.cli.runlab import lab_ip
from handshake_lab.errors import LabInvalidError, UsageError
from handshake_lab.net.endpoints import address_of
from handshake_lab.observe.aliases import address, is_mapped
from handshake_lab.observe.base import Address, SocketRecord, mapped_text
from handshake_lab.observe.netlink_codec import parse_messages
from handshake_lab.observe.psutil_observer import record_from_connection
from handshake_lab.observe.reconcile import reconcile
from handshake_lab.observe.ss import parse_address, parse_line, parse_peer
from handshake_lab.placement.place import ip_for
from handshake_lab.record.codec import from_json, to_json
from handshake_lab.record.events import SideObservation, StepReport
from handshake_lab.spec.loader import builtin_dir, load_lab, parse_lab
from handshake_lab.spec.model import DUAL_STACK, Lab
from handshake_lab.tcp.states import TcpState
from tests.netlink_replies import SOCK_DIAG_BY_FAMILY, diag_msg, nlmsg, v6

PLAIN = Address("127.0.0.1", 8080)


def test_every_spelling_of_a_mapped_end_is_the_plain_ipv4_end_marked_mapped() -> None:
    [from_netlink] = parse_messages(
        nlmsg(
            SOCK_DIAG_BY_FAMILY,
            diag_msg(family=socket.AF_INET6, src=v6("::ffff:127.0.0.1"), sport=8080),
        )
    )
    spellings = {
        "ss": parse_address("[::ffff:127.0.0.1]:8080"),
        "psutil/aliases": address("::ffff:127.0.0.1", 8080),
        "upper-case hex": address("::FFFF:7f00:1", 8080),
        "netlink": from_netlink.local,
        "getpeername": address_of(("::ffff:127.0.0.1", 8080, 0, 0)),
    }
    for source, end in spellings.items():
        assert end == PLAIN, source  # the same 4-tuple end: matching ignores the spelling
        assert hash(end) == hash(PLAIN), source
        assert end.mapped, source
        assert str(end) == "127.0.0.1:8080", source  # the key every view matches with
        assert end.shown == "[::ffff:127.0.0.1]:8080", source  # what ss printed
    for plain in (parse_address("127.0.0.1:8080"), address("127.0.0.1", 8080), PLAIN):
        assert not plain.mapped
        assert plain.shown == "127.0.0.1:8080"
    assert not address("::1", 80).mapped
    assert address("::1", 80).shown == "[::1]:80"


def test_only_ipv4_mapped_addresses_count_as_mapped() -> None:
    assert is_mapped("::ffff:10.0.0.1")
    assert is_mapped("::FFFF:a00:1")
    for other in ("::1", "::", "127.0.0.1", "2001:db8::1", "64:ff9b::7f00:1", "not an address"):
        assert not is_mapped(other), other


def test_the_wildcard_listeners_are_told_apart_by_address() -> None:
    # ss: "*" is the dual-stack ::, "[::]" the v6only one; both are the IPv6 any-address.
    assert parse_address("*:8080") == parse_address("[::]:8080") == Address("::", 8080)
    assert parse_address("0.0.0.0:8080") == Address("0.0.0.0", 8080) != Address("::", 8080)
    assert parse_peer("*:*") is None
    assert parse_peer("0.0.0.0:*") is None


class _Conn:
    """A psutil connection as ``net_connections`` returns one."""

    def __init__(self, laddr: tuple[str, int], raddr: tuple[str, int]) -> None:
        self.fd, self.family, self.type = 5, socket.AF_INET6, socket.SOCK_STREAM
        self.laddr, self.raddr, self.status, self.pid = laddr, raddr, "ESTABLISHED", 7


def test_ss_psutil_and_netlink_reconcile_a_mapped_socket_by_its_ipv4_tuple() -> None:
    """The runner asks for the server's end by the client's tuple (plain IPv4, the client is
    an IPv4 socket); every source answers, and the answer keeps the mapped spelling."""
    ss = parse_line("ESTAB 0 0 [::ffff:127.0.0.1]:8080 [::ffff:127.0.0.1]:40000")
    ps = record_from_connection(_Conn(("::ffff:127.0.0.1", 8080), ("::ffff:127.0.0.1", 40000)))
    assert ps is not None
    [nl] = parse_messages(
        nlmsg(
            SOCK_DIAG_BY_FAMILY,
            diag_msg(
                family=socket.AF_INET6,
                src=v6("::ffff:127.0.0.1"),
                dst=v6("::ffff:127.0.0.1"),
                sport=8080,
                dport=40000,
            ),
        )
    )
    client_side = SocketRecord(
        "ss", TcpState.ESTABLISHED, "ESTAB", Address("127.0.0.1", 40000), PLAIN
    )
    tables = {"ss": [client_side, ss], "psutil": [ps], "netlink": [nl]}
    seen = reconcile(tables, PLAIN, Address("127.0.0.1", 40000))
    assert seen.state is TcpState.ESTABLISHED
    assert seen.agree
    assert {name: view.raw for name, view in seen.sources.items()} == {
        "ss": "ESTAB",
        "psutil": "ESTABLISHED",
        "netlink": "1",  # sock_diag's own spelling: the state number
    }
    assert seen.local.mapped
    assert seen.remote is not None
    assert seen.remote.mapped
    # The client's own end: the same 4-tuple swapped, never mapped (an IPv4 socket).
    mine = reconcile({"ss": [client_side, ss]}, Address("127.0.0.1", 40000), PLAIN)
    assert mine.state is TcpState.ESTABLISHED
    assert not mine.local.mapped


def _side(**kwargs: object) -> SideObservation:
    base: dict[str, object] = {
        "side": "server",
        "state": "ESTABLISHED",
        "local": "127.0.0.1:8080",
        "remote": "127.0.0.1:40000",
        "sources": {"ss": "ESTAB", "psutil": "ESTABLISHED"},
        "agree": True,
    }
    return SideObservation(**{**base, **kwargs})  # type: ignore[arg-type]


def test_views_print_a_mapped_side_as_ss_does_and_keep_the_ipv4_key() -> None:
    mapped = _side(mapped=True)
    assert mapped.tuple_text() == "[::ffff:127.0.0.1]:8080 > [::ffff:127.0.0.1]:40000"
    assert _side().tuple_text() == "127.0.0.1:8080 > 127.0.0.1:40000"
    assert _side(remote=None, local="[::]:8080").tuple_text() == "[::]:8080 *"
    assert _side(local=None, remote=None, sources={}).tuple_text() is None
    assert mapped_text("[::1]:80", mapped=True) == "[::1]:80"  # IPv6 stays as it is
    assert mapped_text("10.0.0.1:80", mapped=False) == "10.0.0.1:80"


def _report(observed: dict[str, SideObservation]) -> StepReport:
    return StepReport(
        index=1, id="s", actor="client", action="connect", args={}, expected={},
        observed=observed, outcome="ok", expected_outcome=None, data=None, expected_data=None,
        facts={}, expected_facts={}, agrees=True, mismatches=[], explain_key="k",
        explanation={"en": "e", "zh": "e"}, action_ms=0.0, settle_ms=0.0,
    )  # fmt: skip


def test_the_record_keeps_mapped_and_reads_older_runs_without_it() -> None:
    doc = to_json(_report({"server": _side(mapped=True), "client": _side(side="client")}), "en")
    assert doc["observed"]["server"]["mapped"] is True
    assert doc["observed"]["server"]["local"] == "127.0.0.1:8080"  # the 4-tuple stays IPv4
    event, _ = from_json(doc)
    assert isinstance(event, StepReport)
    assert event.observed["server"].mapped
    assert not event.observed["client"].mapped
    del doc["observed"]["server"]["mapped"]  # a run saved before the field existed
    older, _ = from_json(doc)
    assert isinstance(older, StepReport)
    assert older.observed["server"].mapped is False


HEAD = """
schema = 1
name = "tiny"
title = {en = "Tiny", zh = "小"}
summary = {en = "a tiny lab", zh = "一个小实验"}
"""


def _lab(top: str, *steps: str) -> str:
    body = "".join(
        f'[[step]]\nid = "s{i}"\n{step}\nexplain = {{en = "x", zh = "x"}}\n'
        for i, step in enumerate(steps, 1)
    )
    return HEAD + top + "\n" + body


DUAL = 'ip = "dual"\nclients = ["client"]'
LISTEN6 = 'actor = "server"\naction = "listen"\nargs = { bind = "::" }'


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        (
            _lab("", 'actor = "client"\naction = "connect"\nargs = { family = 6 }'),
            "args = { family = 6 }",
            "step 1 (s1): family needs ip = 'dual' at the top of the lab (both families)",
        ),
        (
            _lab(DUAL, LISTEN6, 'actor = "client"\naction = "connect"'),
            'action = "connect"',
            "step 2 (s2): in an ip = 'dual' lab, connect must say family = 4 or 6",
        ),
        (
            _lab(DUAL, LISTEN6, 'actor = "client"\naction = "connect"\nargs = { family = 5 }'),
            "family = 5",
            "step 2 (s2): connect argument 'family' must be one of 4, 6",
        ),
        (
            _lab("", 'actor = "server"\naction = "listen"\nargs = { bind = "::" }'),
            'args = { bind = "::" }',
            "step 1 (s1): bind = '::' needs ip = 'dual' at the top of the lab",
        ),
        (
            _lab(DUAL, 'actor = "server"\naction = "listen"'),
            'action = "listen"',
            "step 1 (s1): in an ip = 'dual' lab, listen must say bind = '::' or '0.0.0.0'",
        ),
        (
            _lab(DUAL, 'actor = "server"\naction = "listen"\nargs = { bind = "::1" }'),
            'bind = "::1"',
            "step 1 (s1): listen argument 'bind' must be one of 'server', '::', '0.0.0.0'",
        ),
        (
            _lab(
                DUAL,
                'actor = "server"\naction = "listen"\nargs = { bind = "0.0.0.0", v6only = true }',
            ),
            "v6only = true }",
            "step 1 (s1): v6only is an IPv6 socket option: it needs bind = '::'",
        ),
        (
            _lab(
                DUAL, 'actor = "server"\naction = "listen"\nargs = { bind = "::", v6only = "yes" }'
            ),
            'v6only = "yes"',
            "step 1 (s1): listen argument 'v6only' must be one of true, false, 'default'",
        ),
        (
            _lab(
                DUAL,
                'actor = "server"\naction = "listen"\n'
                'args = { bind = "::", v6only = true, reuse_address = "default" }',
            ),
            'reuse_address = "default"',
            "step 1 (s1): v6only needs reuse_address = true or false (with 'default' the loop "
            "binds the socket before it could be set)",
        ),
        (
            _lab(
                DUAL,
                'actor = "server"\naction = "listen"\nargs = { bind = "::", same_port_as = "x" }',
            ),
            'same_port_as = "x"',
            "step 1 (s1): same_port_as needs a slot of its own: port = 'NAME'",
        ),
        (
            _lab(
                DUAL,
                'actor = "server"\naction = "listen"\n'
                'args = { port = "b", bind = "0.0.0.0", same_port_as = "nowhere" }',
            ),
            'same_port_as = "nowhere"',
            "step 1 (s1): same_port_as 'nowhere' is not another port slot of the lab",
        ),
        (
            _lab(DUAL, 'actor = "client"\naction = "churn"'),
            'action = "churn"',
            "step 1 (s1): churn uses the run's one address: not in an ip = 'dual' lab",
        ),
        (
            _lab('ip = "both"', LISTEN6),
            'ip = "both"',
            "ip must be 'any' (the run's --ip) or 'dual' (both families), not 'both'",
        ),
    ],
)
def test_family_arguments_are_checked_at_load_in_one_line(
    text: str, needle: str, message: str
) -> None:
    """One line naming the file, the line of the offending key (the step's action where a
    key is missing), the step and the problem."""
    lines = text.splitlines()
    at = [i for i, item in enumerate(lines, 1) if needle in item]
    line = at[-1] if needle.startswith("action") else at[0]
    with pytest.raises(LabInvalidError) as info:
        parse_lab(text.encode(), "tiny.toml")
    assert str(info.value) == f"tiny.toml:{line}: {message}"
    assert "\n" not in str(info.value)


def test_a_second_listener_takes_the_port_of_the_slot_it_names() -> None:
    lab = parse_lab(
        _lab(
            DUAL,
            LISTEN6,
            'actor = "server"\naction = "listen"\n'
            'args = { port = "v4", bind = "0.0.0.0", same_port_as = "main" }',
        ).encode(),
        "tiny.toml",
    )
    assert lab.dual
    assert lab.ip == "dual"
    assert lab.ports == ("main", "v4")
    assert lab.port_aliases() == {"v4": "main"}
    assert "listener.v4" in lab.sides()
    # The new arguments are not filled in where a lab leaves them out: the records of the
    # one-family labs keep the arguments they always had.
    assert lab.steps[0].args == {
        "port": "main",
        "backlog": 16,
        "reuse_address": False,
        "accept": True,
        "bind": "::",
    }


def _dual_lab() -> Lab:
    return load_lab(builtin_dir() / "dual-stack.toml")


def test_ip_is_refused_for_a_dual_lab_and_both_families_are_placed() -> None:
    dual = _dual_lab()
    assert lab_ip(dual, None) == ip_for(dual, 4) == DUAL_STACK
    for given in (4, 6):
        with pytest.raises(UsageError, match="leave out --ip/-6"):
            lab_ip(dual, given)
    with pytest.raises(UsageError, match="not --ip 6"):
        ip_for(dual, 6)
    one = replace(dual, ip="any")
    assert (lab_ip(one, None), lab_ip(one, 6), ip_for(one, 6)) == (4, 6, 6)
