"""Hostile clients get a clear error each, and the agent goes on serving the next one.

Every test ends with a well-behaved session (``assert_good_session``): a bad client must never
leave the agent unable to serve others.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import pytest

from handshake_lab.agent.protocol import MAX_LINE, encode_request, proof
from tests.integration.agent_support import (
    HOST,
    AgentThread,
    RawClient,
    assert_good_session,
    poll_until,
    running_agent,
)


@pytest.fixture
def agent(loop_name: str) -> Iterator[AgentThread]:
    with running_agent(loop_name, hello_timeout=0.5, line_timeout=0.5) as running:
        yield running


def error_of(reply: dict[str, object]) -> str:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["message"], reply
    code: str = error["code"]
    return code


def test_greeting_names_versions_and_a_fresh_nonce(agent: AgentThread) -> None:
    with RawClient(agent.port) as one, RawClient(agent.port) as two:
        assert one.greeting["versions"] == [1]
        assert one.greeting["nonce"] != two.greeting["nonce"]
    assert_good_session(agent.port)


def test_wrong_token_is_refused_and_the_connection_closed(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert error_of(client.hello("f" * 64)) == "auth"
        assert client.closed_by_agent()
    assert_good_session(agent.port)


def test_a_request_before_hello_is_refused(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert error_of(client.request("begin", {"echo": True})) == "auth"
        assert client.closed_by_agent()
    assert_good_session(agent.port)


def test_malformed_json_is_refused(agent: AgentThread) -> None:
    for garbage in (b"{not json\n", b"[1, 2]\n", b"\xff\xfe\n", b'{"v":1}\n', b"\n"):
        with RawClient(agent.port) as client:
            client.send_raw(garbage)
            assert error_of(client.reply()) == "malformed", garbage
            assert client.closed_by_agent()
    assert_good_session(agent.port)


def test_malformed_json_after_hello_also_ends_the_session(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        client.send_raw(b'{"v":1,"seq":2,"verb":"ping","args":{}\n')
        assert error_of(client.reply()) == "malformed"
        assert client.closed_by_agent()
    assert_good_session(agent.port)


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("exec", {"cmd": "rm -rf /"}),
        ("shell", {"command": "id"}),
        ("run", {"path": "/bin/sh"}),
        ("__class__", {}),
    ],
)
def test_unknown_and_shell_like_verbs_are_refused(
    agent: AgentThread, verb: str, args: dict[str, object]
) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        assert error_of(client.request(verb, args)) == "unknown_verb"
        # Not fatal: the session goes on.
        assert client.request("ping")["ok"]
    with RawClient(agent.port) as client:
        # Before hello, the same verb is an authentication failure, nothing more.
        assert error_of(client.request(verb, args)) == "auth"
    assert_good_session(agent.port)


def test_bad_arguments_are_refused_by_type(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        assert client.request("begin", {"echo": True})["ok"]
        bad: list[tuple[str, dict[str, object]]] = [
            ("reserve_port", {"port": True}),
            ("reserve_port", {"port": 70000}),
            ("listen", {"slot": "main", "port": "80", "backlog": 1}),
            ("listen", {"slot": "main", "port": 8080, "backlog": 1, "surprise": 1}),
            ("stream_action", {"peer": "1.2.3.4:5", "action": "send", "timeout": 1}),
            ("stream_action", {"peer": {"host": "h", "port": 1}, "action": "exec", "timeout": 1}),
            ("snapshot", {"ports": [1] * 100}),
            ("begin", {"echo": "yes"}),
        ]
        for verb, args in bad:
            assert error_of(client.request(verb, args)) == "bad_args", (verb, args)
        assert client.request("ping")["ok"]
    assert_good_session(agent.port)


def test_a_lab_verb_before_begin_is_refused(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        assert (
            error_of(
                client.request(
                    "listen",
                    {
                        "slot": "main",
                        "port": 9,
                        "backlog": 1,
                        "reuse_address": False,
                        "accept": True,
                    },
                )
            )
            == "no_session"
        )
    assert_good_session(agent.port)


def test_holds_outside_a_lab_namespace_are_unavailable(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        assert client.request("begin", {"echo": True})["ok"]
        add_hold = {"id": "h", "kind": "drop_syn", "port": 9}
        reply = client.request("ns_op", {"op": "add_hold", "args": add_hold})
        assert error_of(reply) == "unavailable"
        reply = client.request("ns_op", {"op": "sysctl", "args": {"key": "net.x.y", "value": 1}})
        assert error_of(reply) == "unavailable"
        assert error_of(client.request("ns_op", {"op": "exec", "args": {}})) == "bad_args"
        counters = client.request("ns_op", {"op": "counters"})
        assert counters["ok"], counters
        assert "TcpExt.ListenOverflows" in counters["result"]["value"]
    assert_good_session(agent.port)


def test_oversized_line_is_refused(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        # Exactly MAX_LINE bytes and no newline yet: the agent has read it all, so the reply
        # and the close arrive in order (no unread data to turn the close into a reset).
        client.send_raw(b'{"pad":"' + b"x" * (MAX_LINE - 8))
        assert error_of(client.reply()) == "too_large"
        assert client.closed_by_agent()
    with RawClient(agent.port) as client:
        try:  # a much longer flood: the agent stops reading and may reset the rest
            client.send_raw(b"y" * (8 * MAX_LINE))
            code = error_of(client.reply())
        except ConnectionError:
            code = "too_large"
        assert code == "too_large"
    assert_good_session(agent.port)


def test_silent_client_times_out(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        started = time.monotonic()
        reply = client.reply()  # the agent speaks first when the hello timeout passes
        assert error_of(reply) == "timeout"
        assert "hello" in reply["error"]["message"]
        assert time.monotonic() - started < 3.0
        assert client.closed_by_agent()
    assert_good_session(agent.port)


def test_slow_writer_times_out_mid_line(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        client.send_raw(b'{"v":1,"seq":2,')  # ... and never the rest
        assert error_of(client.reply()) == "timeout"
        assert client.closed_by_agent()
    assert_good_session(agent.port)


def test_replayed_seq_is_refused(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        assert client.hello()["ok"]
        assert client.request("ping")["ok"]
        client.send_raw(encode_request(client.seq, "ping"))  # the same frame again
        assert error_of(client.reply()) == "replay"
        assert client.closed_by_agent()
    assert_good_session(agent.port)


def test_a_recorded_hello_replayed_on_a_new_connection_is_refused(agent: AgentThread) -> None:
    with RawClient(agent.port) as first:
        recorded = encode_request(
            1, "hello", {"proof": proof("0123456789abcdef" * 4, first.greeting["nonce"])}
        )
        first.send_raw(recorded)
        assert first.reply()["ok"]
    with RawClient(agent.port) as second:
        second.send_raw(recorded)  # a sniffer's copy: the proof is bound to the old nonce
        assert error_of(second.reply()) == "auth"
    assert_good_session(agent.port)


def test_unsupported_version_is_refused(agent: AgentThread) -> None:
    with RawClient(agent.port) as client:
        client.send_raw(b'{"v":2,"seq":1,"verb":"hello","args":{}}\n')
        reply = client.reply()
        assert error_of(reply) == "version"
        assert "1" in reply["error"]["message"]
    assert_good_session(agent.port)


def test_too_many_connections_get_busy() -> None:
    with running_agent(max_connections=2, hello_timeout=2.0) as agent:
        held = [RawClient(agent.port), RawClient(agent.port)]
        try:
            sock = socket.create_connection((HOST, agent.port), timeout=5.0)
            with sock, sock.makefile("rb") as stream:
                reply = json.loads(stream.readline())
                assert reply["error"]["code"] == "busy"
        finally:
            for client in held:
                client.close()
        poll_until(
            lambda: agent.call(lambda: agent.agent.stats.active) == 0,
            what="the held sessions to end",
        )
        assert_good_session(agent.port)


# -- lock-out: what anyone who reaches the port can do before authenticating ----------------

ATTACKER = "127.0.0.2"  # on lo like 127.0.0.1, but another source address for the quota


def _connect_from(source: str, port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10.0, source_address=(source, 0))
    sock.settimeout(10.0)
    return sock


def _first_line(sock: socket.socket) -> dict[str, object]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before a line: {data!r}"
        data += chunk
    doc: dict[str, object] = json.loads(data)
    return doc


def test_a_trickling_client_is_cut_off_at_the_hello_deadline(loop_name: str) -> None:
    """One byte every 0.1 s used to hold a slot for line_timeout; hello_timeout is the whole
    pre-auth time, as docs/agent.md says."""
    with running_agent(loop_name, hello_timeout=0.5, line_timeout=60.0) as agent:
        sock = _connect_from(HOST, agent.port)
        with sock:
            assert "nonce" in _first_line(sock)
            started = time.monotonic()
            answer = b""
            # Far less than line_timeout (60 s): the cut-off comes from the hello deadline.
            while time.monotonic() - started < 30.0:
                try:
                    sock.sendall(b"{")
                except OSError:
                    break
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable:
                    answer = sock.recv(4096)
                    break
            elapsed = time.monotonic() - started
            assert elapsed < 30.0, "the trickle was never cut off"
            if answer:  # a reset may beat the reply to a client that keeps writing
                reply = json.loads(answer.splitlines()[0])
                assert error_of(reply) == "timeout"
                assert "hello" in reply["error"]["message"]
        assert_good_session(agent.port)


def test_one_address_cannot_starve_an_authenticated_client(loop_name: str) -> None:
    """100 idle or trickling connections from one address: the first few hold pre-auth slots,
    the rest get ``busy`` at once, and a client from another address is served."""
    with running_agent(loop_name, hello_timeout=60.0, line_timeout=60.0) as agent:
        quota = agent.config.max_preauth_per_address
        socks = [_connect_from(ATTACKER, agent.port) for _ in range(100)]
        try:
            greeted = busy = 0
            for i, sock in enumerate(socks):
                first = _first_line(sock)
                if "nonce" in first:
                    greeted += 1
                    if i % 2:
                        sock.sendall(b'{"v":1,')  # a trickle that has started its line
                else:
                    assert error_of(first) == "busy"
                    assert ATTACKER in str(first["error"]), first
                    busy += 1
            assert greeted == quota
            assert busy == 100 - quota
            assert agent.call(lambda: agent.agent.preauth[ATTACKER]) == quota
            assert_good_session(agent.port)  # from 127.0.0.1, while the attacker's are open
            assert agent.call(lambda: agent.agent.preauth[ATTACKER]) == quota
        finally:
            for sock in socks:
                sock.close()
        poll_until(
            lambda: agent.call(lambda: not agent.agent.preauth), what="pre-auth slots freed"
        )


def test_unauthenticated_connections_stop_at_max_preauth(loop_name: str) -> None:
    """From many addresses, unauthenticated connections stop at max_preauth, so the slots
    of authenticated sessions stay theirs: one opened first is served on."""
    with running_agent(loop_name, hello_timeout=60.0, max_connections=6, max_preauth=3) as agent:
        with RawClient(agent.port) as served:
            assert served.hello()["ok"]
            sources = [f"127.0.0.{n}" for n in range(2, 6)]
            socks = [_connect_from(source, agent.port) for source in sources]
            try:
                replies = [_first_line(sock) for sock in socks]
                assert ["nonce" in r for r in replies] == [True, True, True, False]
                assert error_of(replies[3]) == "busy"
                assert served.request("begin", {"echo": True})["ok"]
                assert served.request("reserve_port", {"port": None, "taken": []})["ok"]
                assert served.request("close_all")["ok"]
            finally:
                for sock in socks:
                    sock.close()
        poll_until(
            lambda: agent.call(lambda: not agent.agent.preauth), what="pre-auth slots freed"
        )
        assert_good_session(agent.port)


def test_wrong_tokens_from_one_address_slow_down(loop_name: str) -> None:
    """Each wrong token waits longer for its reply (a floor: load can only add to it), and a
    good token from that address is still accepted and resets the backoff."""
    with running_agent(loop_name, auth_delay=0.1, auth_delay_max=0.4) as agent:
        floors = [0.1, 0.2, 0.4, 0.4]
        for floor in floors:
            with RawClient(agent.port) as client:
                started = time.monotonic()
                assert error_of(client.hello("f" * 64)) == "auth"
                waited = time.monotonic() - started
                assert waited >= floor * 0.95, (floor, waited)  # 5 %: clock granularity
        assert agent.call(lambda: agent.agent.throttle.failures(HOST)) == len(floors)
        assert_good_session(agent.port)
        assert agent.call(lambda: agent.agent.throttle.failures(HOST)) == 0


def test_agent_refuses_a_wildcard_bind() -> None:
    from handshake_lab.agent.run import AgentUsageError, check_bind  # noqa: PLC0415

    with pytest.raises(AgentUsageError, match="every interface"):
        check_bind("0.0.0.0")
    with pytest.raises(AgentUsageError, match="IPv4"):
        check_bind("example.org")
    assert check_bind("127.0.0.1") == "127.0.0.1"
