"""The sock_diag reader on hand-built replies (struct-packed, no sockets), and fuzzed.

Replies are packed by ``tests.netlink_replies``, independently of the reader's own ``Struct``
objects, so a wrong offset in the reader shows up as a wrong field rather than agreeing with
itself.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import socket
import struct
from collections.abc import Callable
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import UnknownStateError
from handshake_lab.observe.base import Address, Timer
from handshake_lab.observe.netlink import NetlinkObserver
from handshake_lab.observe.netlink_codec import (
    ALL_STATES_MASK,
    Decoder,
    MarkDecoder,
    NetlinkError,
    NetlinkRecord,
    dump_request,
    exact_request,
    parse_marks,
    parse_messages,
    port_filter_bytecode,
    state_mask,
)
from handshake_lab.tcp.states import TcpState
from tests.netlink_replies import (
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    diag_msg,
    done,
    error,
    nlmsg,
    v4,
    v6,
)


def test_established_ipv4_socket_is_decoded_with_ports_in_network_order() -> None:
    [record] = parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg()) + done())
    assert record == NetlinkRecord(
        source="netlink",
        state=TcpState.ESTABLISHED,
        raw_state="1",
        local=Address("127.0.0.1", 8000),
        remote=Address("127.0.0.1", 40000),
        recv_q=0,
        send_q=0,
        uid=1000,
        inode=77,
        cookie=0x1_0000_0002,
    )
    assert record.pid is None  # sock_diag does not know the owning process


def test_listener_has_no_peer_and_reports_its_queues() -> None:
    payload = diag_msg(state=10, dport=0, dst=bytes(16), src=bytes(16), rqueue=2, wqueue=128)
    [record] = parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, payload))
    assert record.state is TcpState.LISTEN
    assert record.local == Address("0.0.0.0", 8000)
    assert record.remote is None
    assert (record.recv_q, record.send_q) == (2, 128)


def test_time_wait_timer_is_named_like_ss_with_seconds_left() -> None:
    payload = diag_msg(state=6, timer=3, expires=59_876, uid=0, inode=0)
    [record] = parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, payload))
    assert record.state is TcpState.TIME_WAIT
    assert record.timer == Timer("timewait", 59.876, 0)


@pytest.mark.parametrize(
    ("code", "name"),
    [(1, "on"), (2, "keepalive"), (3, "timewait"), (4, "persist"), (5, "unknown"), (9, "unknown")],
)
def test_timer_codes_map_to_ss_names(code: int, name: str) -> None:
    [record] = parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(timer=code, retrans=3)))
    assert record.timer == Timer(name, 0.0, 3)


def test_ipv6_and_v4_mapped_hosts_are_normalised() -> None:
    reply = nlmsg(
        SOCK_DIAG_BY_FAMILY,
        diag_msg(family=socket.AF_INET6, src=v6("::1"), dst=v6("2001:db8:0:0:1:0:0:1")),
    ) + nlmsg(
        SOCK_DIAG_BY_FAMILY,
        diag_msg(family=socket.AF_INET6, src=v6("::ffff:127.0.0.1"), dst=v6("::ffff:10.0.0.2")),
    )
    first, second = parse_messages(reply)
    assert (first.local.host, first.remote) == ("::1", Address("2001:db8::1:0:0:1", 40000))
    assert (second.local.host, second.remote) == ("127.0.0.1", Address("10.0.0.2", 40000))


def test_attributes_after_the_message_are_skipped() -> None:
    shutdown_attr = struct.pack("=HHB", 5, 8, 1) + bytes(3)  # INET_DIAG_SHUTDOWN
    reply = nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(attributes=shutdown_attr)) * 2 + done()
    assert [r.state for r in parse_messages(reply)] == [TcpState.ESTABLISHED] * 2


def test_every_tcp_states_number_is_a_state_and_unknown_numbers_raise() -> None:
    for state in TcpState:
        [record] = parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(state=state.value)))
        assert record.state is state
    for number in (0, 13, 255):
        with pytest.raises(UnknownStateError, match=f"'{number}'"):
            parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(state=number)))


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (errno.EPERM, "needs more privileges"),
        (errno.ENOENT, "No such file"),
        (errno.EINVAL, "Invalid argument"),
    ],
)
def test_kernel_errors_become_observer_errors_with_the_errno(code: int, text: str) -> None:
    with pytest.raises(NetlinkError, match=text) as caught:
        parse_messages(error(code))
    assert caught.value.errno == code
    assert isinstance(caught.value, ObserverError)


def test_a_dump_that_fails_midway_reports_the_error_in_done() -> None:
    with pytest.raises(NetlinkError) as caught:
        parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg()) + done(code=-errno.EINTR))
    assert caught.value.errno == errno.EINTR


def test_decoder_skips_other_sequence_numbers_and_stops_at_done() -> None:
    decoder = Decoder(seq=7)
    stale = nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(sport=1), seq=6) + done(seq=6)
    decoder.feed(stale + nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(sport=2), seq=7))
    assert not decoder.done
    decoder.feed(done(seq=7) + nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(sport=3), seq=7))
    assert decoder.done
    assert [r.local.port for r in decoder.records] == [2]


def test_decoder_reads_only_up_to_end() -> None:
    data = bytearray(nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg()) + b"\xff" * 64)
    decoder = Decoder()
    decoder.feed(data, len(data) - 64)
    assert len(decoder.records) == 1


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"\x10\x00", "truncated message header"),
        (struct.pack("=IHHII", 8, 20, 0, 1, 0), "bad message length"),
        (struct.pack("=IHHII", 200, 20, 0, 1, 0), "bad message length"),
        (nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg()[:71]), "truncated inet_diag_msg"),
        (nlmsg(NLMSG_ERROR, b"\x00\x00"), "truncated error"),
        (nlmsg(4, b""), "OVERRUN"),
        (nlmsg(99, b""), "unexpected message type 99"),
        (nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(family=1)), "address family 1"),
    ],
)
def test_malformed_replies_raise_observer_error_naming_the_problem(
    reply: bytes, match: str
) -> None:
    with pytest.raises(ObserverError, match=match):
        parse_messages(reply)


def test_dump_request_layout() -> None:
    request = dump_request(socket.AF_INET6, state_mask(None), b"\x01\x04\x04\x00", seq=9)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq, pid) == (len(request), 20, 0x301, 9, 0)
    assert request[16:20] == bytes([socket.AF_INET6, socket.IPPROTO_TCP, 0, 0])
    assert struct.unpack_from("=I", request, 20) == (ALL_STATES_MASK,)
    assert len(request) == 16 + 56 + 4 + 4  # header, inet_diag_req_v2, nlattr, bytecode
    assert struct.unpack_from("=HH", request, 72) == (8, 1)  # INET_DIAG_REQ_BYTECODE


def test_exact_request_carries_the_4_tuple_and_no_cookie() -> None:
    request = exact_request(Address("127.0.0.1", 8000), Address("127.0.0.2", 40000), seq=3)
    assert struct.unpack_from("=HH", request, 4) == (20, 1)  # NLM_F_REQUEST only, no DUMP
    sockid = request[24:72]
    assert struct.unpack_from(">HH", sockid) == (8000, 40000)
    assert sockid[4:20] == v4("127.0.0.1")
    assert sockid[20:36] == v4("127.0.0.2")
    assert struct.unpack_from("=III", sockid, 36) == (0, 0xFFFFFFFF, 0xFFFFFFFF)
    listener = exact_request(Address("::1", 8000), None, seq=4)
    assert listener[16] == socket.AF_INET6
    assert listener[24 + 20 : 24 + 36] == bytes(16)
    with pytest.raises(ValueError, match="same address family"):
        exact_request(Address("::1", 1), Address("127.0.0.1", 2), seq=5)


def test_state_mask_adds_request_sockets_to_syn_recv() -> None:
    assert state_mask([TcpState.TIME_WAIT]) == 1 << 6
    assert state_mask([TcpState.SYN_RECV]) == (1 << 3) | (1 << 12)
    assert state_mask(None) == sum(1 << n for n in range(1, 13))


# --- fuzzing: whatever the bytes, the reader returns records or raises ObserverError ---------

states = st.sampled_from([s.value for s in TcpState])
messages = st.builds(
    diag_msg,
    family=st.sampled_from([socket.AF_INET, socket.AF_INET6]),
    state=states,
    timer=st.integers(0, 255),
    retrans=st.integers(0, 255),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    src=st.binary(min_size=16, max_size=16),
    dst=st.binary(min_size=16, max_size=16),
    expires=st.integers(0, 2**32 - 1),
    attributes=st.binary(max_size=12),
)
replies = st.lists(messages, max_size=4).map(
    lambda payloads: b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, p) for p in payloads) + done()
)


@given(replies)
def test_well_formed_replies_decode_one_record_per_message(reply: bytes) -> None:
    records = parse_messages(reply)
    assert all(isinstance(r, NetlinkRecord) for r in records)
    assert all(r.remote is None or r.remote.port > 0 for r in records)


def damage(reply: bytes, data: st.DataObject) -> bytes:
    """``reply`` cut short at a drawn length, with drawn bytes overwritten."""
    cut = data.draw(st.integers(0, len(reply)), label="cut")
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, max(len(reply) - 1, 0)), st.integers(0, 255))),
        label="flips",
    )
    damaged = bytearray(reply[:cut])
    for position, value in flips:
        if position < len(damaged):
            damaged[position] = value
    return bytes(damaged)


@settings(max_examples=300)
@given(replies, st.data())
def test_truncated_or_corrupted_replies_raise_only_observer_error(
    reply: bytes, data: st.DataObject
) -> None:
    with contextlib.suppress(ObserverError):
        parse_messages(damage(reply, data))


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_observer_error(data: bytes) -> None:
    with contextlib.suppress(ObserverError):
        parse_messages(data)


def test_fast_builders_make_the_same_objects_as_the_constructors() -> None:
    from handshake_lab.observe import netlink_codec as netlink  # noqa: PLC0415

    assert netlink._RECORD_SETTERS  # the fast path is live for the current base.py
    assert netlink._TIMER_SETTERS
    timer = netlink._timer(3, 59_876, 2)
    assert timer == Timer("timewait", 59.876, 2)
    assert hash(timer) == hash(Timer("timewait", 59.876, 2))
    local, remote = netlink._new_address("::1", 80), Address("::1", 81)
    assert local == Address("::1", 80)
    args = ("netlink", TcpState.LISTEN, "10", local, remote, Timer("on", 0.2, 1), None)
    fast = netlink._new_record(*args, 1, 2, 3, 4, 5)
    assert fast == NetlinkRecord(*args, 1, 2, 3, 4, 5)
    assert hash(fast.local) == hash(Address("::1", 80))


def test_same_bytes_in_two_families_are_two_hosts() -> None:
    raw = v4("127.0.0.1")  # also the IPv6 address 7f00:1::
    reply = nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(src=raw)) + nlmsg(
        SOCK_DIAG_BY_FAMILY, diag_msg(family=socket.AF_INET6, src=raw)
    )
    assert [r.local.host for r in parse_messages(reply)] == ["127.0.0.1", "7f00:1::"]


def test_one_pass_dump_request_is_the_tcpdiag_getsock_layout() -> None:
    request = dump_request(socket.AF_UNSPEC, 1 << 10, None, seq=2)
    assert struct.unpack_from("=IHH", request) == (16 + 60, 18, 0x301)
    assert request[16:20] == bytes(4)  # family AF_UNSPEC, src_len, dst_len, ext
    assert struct.unpack_from("=II", request, 16 + 52) == (1 << 10, 0)  # states, dbs


def test_replies_to_the_one_pass_request_decode_like_sock_diag_ones() -> None:
    [record] = parse_messages(nlmsg(18, diag_msg(state=6, timer=3, expires=1500)) + done())
    assert (record.state, record.timer) == (TcpState.TIME_WAIT, Timer("timewait", 1.5, 0))


class ScriptedSocket:
    """Stands in for the netlink socket: answers each request with a scripted reply."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.sent: list[bytes] = []
        self.pending = b""

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        self.pending = self.answer(data)
        return len(data)

    def recv_into(self, buffer: bytearray) -> int:
        size = len(self.pending)
        buffer[:size] = self.pending
        return size

    def settimeout(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_observer_falls_back_to_one_request_per_family_if_the_old_request_is_refused() -> None:
    def answer(request: bytes) -> bytes:
        kind, seq = (
            struct.unpack_from("=H", request, 4)[0],
            struct.unpack_from("=I", request, 8)[0],
        )
        if kind == 18:
            return error(errno.EINVAL, seq=seq)
        family = request[16]
        src = v4("127.0.0.1") if family == socket.AF_INET else v6("::1")
        return nlmsg(20, diag_msg(family=family, src=src, dst=src), seq) + done(seq)

    fake = ScriptedSocket(answer)
    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, fake))
    hosts = [r.local.host for r in observer.snapshot()]
    assert hosts == ["127.0.0.1", "::1"]
    assert [struct.unpack_from("=H", r, 4)[0] for r in fake.sent] == [18, 20, 20]
    observer.snapshot()
    assert [struct.unpack_from("=H", r, 4)[0] for r in fake.sent[3:]] == [20, 20]


def test_observer_maps_permission_errors_and_keeps_going_after_them() -> None:
    def answer(request: bytes) -> bytes:
        return error(errno.EPERM, seq=struct.unpack_from("=I", request, 8)[0])

    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, ScriptedSocket(answer)))
    with pytest.raises(ObserverError, match="needs more privileges"):
        observer.snapshot()
    with pytest.raises(ObserverError, match="Operation not permitted"):
        observer.lookup(Address("127.0.0.1", 1), Address("127.0.0.1", 2))


def test_lookup_of_a_missing_socket_is_none() -> None:
    def answer(request: bytes) -> bytes:
        return error(errno.ENOENT, seq=struct.unpack_from("=I", request, 8)[0])

    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, ScriptedSocket(answer)))
    assert observer.lookup(Address("127.0.0.1", 1), Address("127.0.0.1", 2)) is None


# --- the mark decoder (watch's delta refreshes): the same records, the same errors ---------


def independent_mark(payload: bytes) -> bytes:
    """The mark of an ``inet_diag_msg``, from the documented layout: bytes 0-40 and 68-72."""
    return payload[:40] + payload[68:72]


@given(st.lists(messages, max_size=6), st.sampled_from([SOCK_DIAG_BY_FAMILY, 18]))
def test_marked_dumps_decode_to_the_records_of_the_plain_decoder(
    payloads: list[bytes], kind: int
) -> None:
    reply = b"".join(nlmsg(kind, p) for p in payloads) + done()
    dump = parse_marks(reply)
    assert dump.records() == parse_messages(reply)
    firsts: dict[bytes, bytes] = {}  # mark -> the first message with it
    for payload in payloads:
        firsts.setdefault(independent_mark(payload), payload)
    assert list(dump.marks) == list(firsts)
    assert [dump.record(mark) for mark in firsts] == [
        parse_messages(nlmsg(kind, payload))[0] for payload in firsts.values()
    ]
    assert len(dump.repeats) == len(payloads) - len(firsts)


@settings(max_examples=300)
@given(replies, st.data())
def test_marks_of_truncated_or_corrupted_replies_raise_only_observer_error(
    reply: bytes, data: st.DataObject
) -> None:
    damaged = damage(reply, data)
    try:
        records = parse_messages(damaged)
    except ObserverError:
        # Not always the same one when two things are wrong: the mark decoder checks the
        # framing of the whole reply before any state or family.
        with pytest.raises(ObserverError):
            parse_marks(damaged).records()
    else:
        assert parse_marks(damaged).records() == records


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_marks_of_random_bytes_raise_only_observer_error(data: bytes) -> None:
    with contextlib.suppress(ObserverError):
        parse_marks(data).records()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"\x10\x00", "truncated message header"),
        (struct.pack("=IHHII", 8, 20, 0, 1, 0), "bad message length"),
        (struct.pack("=IHHII", 200, 20, 0, 1, 0), "bad message length"),
        (nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg()[:71]), "truncated inet_diag_msg"),
        (nlmsg(NLMSG_ERROR, b"\x00\x00"), "truncated error"),
        (nlmsg(4, b""), "OVERRUN"),
        (nlmsg(99, b""), "unexpected message type 99"),
        (nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(family=1)), "address family 1"),
        (nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(state=13)), "'13'"),
        (nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg()) + error(errno.EPERM), "needs more privileges"),
    ],
)
def test_malformed_replies_raise_the_same_errors_through_marks(reply: bytes, match: str) -> None:
    with pytest.raises(ObserverError, match=match):
        parse_marks(reply).records()


def test_mark_decoder_skips_other_sequence_numbers_and_stops_at_done() -> None:
    decoder = MarkDecoder(seq=7)
    stale = nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(sport=1), seq=6) + done(seq=6)
    decoder.feed(stale + nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(sport=2), seq=7))
    assert not decoder.done
    decoder.feed(done(seq=7) + nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(sport=3), seq=7))
    assert decoder.done
    assert [r.local.port for r in decoder.dump().records()] == [2]


def test_marks_ignore_the_fields_that_change_on_their_own() -> None:
    """Time left on a timer, queues, cookie, uid: the same mark. State, timer kind,
    retransmits, 4-tuple, family, inode: another one."""
    base = parse_marks(nlmsg(20, diag_msg(timer=3, expires=100, rqueue=1, wqueue=2)))
    same = parse_marks(nlmsg(20, diag_msg(timer=3, expires=99, rqueue=0, cookie=5, uid=1)))
    assert list(base.marks) == list(same.marks)
    for changed in (
        diag_msg(timer=3, expires=100, state=8),
        diag_msg(timer=1, expires=100),
        diag_msg(timer=3, expires=100, retrans=1),
        diag_msg(timer=3, expires=100, dport=40001),
        diag_msg(timer=3, expires=100, family=socket.AF_INET6),
        diag_msg(timer=3, expires=100, inode=78),
    ):
        assert list(parse_marks(nlmsg(20, changed)).marks) != list(base.marks)


def test_a_dump_split_over_datagrams_marks_as_one() -> None:
    payloads = [diag_msg(sport=port, timer=3, expires=port) for port in range(1000, 1040)]
    reply = b"".join(nlmsg(20, p) for p in payloads) + done()
    decoder = MarkDecoder(seq=1)
    for start in range(0, len(reply), 88 * 7):
        decoder.feed(
            bytearray(reply[start : start + 88 * 7]) + b"\xee" * 5, min(88 * 7, len(reply) - start)
        )
    assert decoder.done
    assert decoder.dump().records() == parse_messages(reply)


@pytest.mark.parametrize("one_pass", [True, False])
def test_observer_dump_reads_what_snapshot_reads(one_pass: bool) -> None:
    def answer(request: bytes) -> bytes:
        kind, seq = (
            struct.unpack_from("=H", request, 4)[0],
            struct.unpack_from("=I", request, 8)[0],
        )
        if kind == 18 and not one_pass:
            return error(errno.EINVAL, seq=seq)
        family = (
            socket.AF_INET6 if kind == 20 and request[16] == socket.AF_INET6 else socket.AF_INET
        )
        src = v4("127.0.0.1") if family == socket.AF_INET else v6("::1")
        return b"".join(
            nlmsg(kind, diag_msg(family=family, src=src, dst=src, sport=port), seq)
            for port in (1, 2, 3)
        ) + done(seq)

    fake = ScriptedSocket(answer)
    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, fake))
    assert observer.dump().records() == observer.snapshot()
    assert observer.dump(ports=[]).records() == []
    before = len(fake.sent)
    filtered = observer.dump(ports=[2])  # the kernel would filter; this fake does not
    assert all(r.endswith(port_filter_bytecode([2])) for r in fake.sent[before:])
    assert filtered.records() == observer.snapshot(ports=list(range(1, 1200)))


def test_snapshot_pauses_garbage_collection_and_restores_it_even_on_error() -> None:
    during: list[bool] = []

    def answer(request: bytes) -> bytes:
        during.append(gc.isenabled())
        seq = struct.unpack_from("=I", request, 8)[0]
        if len(during) == 2:
            return error(errno.EPERM, seq=seq)
        return nlmsg(18, diag_msg(), seq) + done(seq)

    observer = NetlinkObserver(socket_factory=lambda: cast(socket.socket, ScriptedSocket(answer)))
    assert gc.isenabled()
    assert len(observer.snapshot()) == 1
    assert gc.isenabled()
    with pytest.raises(ObserverError):
        observer.snapshot()
    assert gc.isenabled()
    gc.disable()
    try:
        observer.snapshot()
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
    assert during == [False, False, False]
