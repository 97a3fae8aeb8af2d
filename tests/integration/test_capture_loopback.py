"""Capture on lo while real asyncio/uvloop sockets connect, send and close (needs CAP_NET_RAW).

Each test listens on its own ephemeral 127.0.0.1 port and filters the capture to it, so other
traffic on lo (other tests, other programs) never reaches the assertions. Waits are bounded
``Sniffer.wait_for`` polls on what has been captured, never sleeps.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from handshake_lab.capture import (
    Packet,
    Sniffer,
    check_fin_acks,
    check_handshake,
    conversation,
    decode_frame,
    read_pcap,
    write_pcap,
)
from handshake_lab.errors import NetworkError
from handshake_lab.net.loops import loop_factory
from handshake_lab.tcp.segments import Flags
from tests import needs
from tests.unit.test_ladder import ladder_lines

pytestmark = pytest.mark.root

TSHARK_FIELDS = (
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "tcp.len",
    "tcp.window_size_value",
    "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr",
)


def _listener(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    sock = socket.socket(family, socket.SOCK_STREAM)
    # No SO_REUSEADDR: an ephemeral port is never reused by a later test anyway.
    sock.bind((host, 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock


async def _converse(listener: socket.socket, payload: bytes) -> bytes:
    """connect, send ``payload``, client closes first, server reads to EOF and closes."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        writer.close()
        await writer.wait_closed()
        received.set_result(data)

    server = await asyncio.start_server(handle, sock=listener)
    host, port = listener.getsockname()[:2]
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    data = await asyncio.wait_for(received, timeout=5)
    server.close()
    await server.wait_closed()
    return data


def _run_conversation(loop_name: str, listener: socket.socket, payload: bytes) -> bytes:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        return runner.run(_converse(listener, payload))


def _closed(packets: Sequence[Packet]) -> bool:
    """Both FINs seen and the last one acknowledged: the conversation is complete."""
    fins = [p for p in packets if Flags.FIN in p.flags]
    if len(fins) < 2:
        return False
    last = fins[-1]
    want = last.segment.next_seq
    return any(
        p.src_port == last.dst_port and Flags.ACK in p.flags and p.ack == want for p in packets
    )


def _key(p: Packet) -> tuple[object, ...]:
    return (p.src_port, p.dst_port, p.seq, p.ack, int(p.flags), p.payload_len, p.options)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = _listener()
    yield sock
    sock.close()


def test_loopback_capture_sees_each_segment_once_and_the_arithmetic_holds(
    loop_name: str, listener: socket.socket, tmp_path: Path
) -> None:
    port = listener.getsockname()[1]
    before = time.monotonic()
    with Sniffer("lo", [port]) as sniffer, Sniffer("lo", [port], ignore_outgoing=False) as both:
        assert _run_conversation(loop_name, listener, b"hello") == b"hello"
        assert sniffer.wait_for(_closed, timeout=5)
        packets = sniffer.drain()
        assert both.wait_for(lambda ps: len(ps) >= 2 * len(packets), timeout=5)
        doubled = both.drain()
    after = time.monotonic()

    # Exactly one copy of each segment with PACKET_OUTGOING ignored ...
    keys = [_key(p) for p in packets]
    assert len(keys) == len(set(keys))
    # ... and the kernel fact behind it: without ignoring, lo shows every segment twice.
    assert sorted(map(_key, doubled)) == sorted(keys + keys)
    assert sniffer.stats.kernel_filter

    flags = [p.flags.text(",") for p in packets]
    assert flags[:3] == ["SYN", "SYN,ACK", "ACK"]
    assert sum(p.payload_len for p in packets if p.dst_port == port) == 5
    assert all(before <= p.timestamp <= after + 0.01 for p in packets)
    assert [p.timestamp for p in packets] == sorted(p.timestamp for p in packets)

    handshake = check_handshake(packets)
    assert [c.name for c in handshake] == [
        "handshake.syn",
        "handshake.synack_ack",
        "handshake.ack_ack",
        "handshake.third_not_syn",
    ]
    assert all(c.ok for c in handshake), handshake
    fins = check_fin_acks(packets)
    assert [c.name for c in fins] == ["fin.client", "fin.server"]
    assert all(c.ok for c in fins), fins

    conv = conversation(packets)
    assert conv.server[1] == port
    assert conv.client_isn_seen
    assert conv.server_isn_seen
    assert conv.entries[0].description.startswith("SYN seq=0 (abs ")
    assert max(len(line) for line in ladder_lines(conv)) <= 80  # as the record draws it

    # The pcap we write reads back byte-identical and decodes to the same packets.
    path = tmp_path / "lo.pcap"
    assert write_pcap(path, packets) == len(packets)
    _, records = read_pcap(path)
    assert [r.frame for r in records] == [p.frame for p in packets]
    assert [_key(decode_frame(r.frame) or packets[0]) for r in records] == keys


def test_tshark_reads_our_pcap_field_for_field(listener: socket.socket, tmp_path: Path) -> None:
    tshark = needs.tool("tshark")
    packets = _capture_one_conversation(listener)
    path = tmp_path / "lo.pcap"
    write_pcap(path, packets)

    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=,"]
    for name in TSHARK_FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.split(",") for line in out.splitlines() if line]

    assert len(rows) == len(packets)
    for row, p in zip(rows, packets, strict=True):
        sport, dport, seq, ack, flags, length, window, tsval, tsecr = row
        assert (int(sport), int(dport)) == (p.src_port, p.dst_port)
        assert (int(seq), int(ack)) == (p.seq, p.ack)
        assert int(flags, 16) == int(p.flags)
        assert (int(length), int(window)) == (p.payload_len, p.window)
        # The timestamps option (the TIME_WAIT lab's TSval/TSecr), empty when absent.
        want = p.options.timestamps
        assert ((int(tsval), int(tsecr)) if tsval else None) == want
    if Path("/proc/sys/net/ipv4/tcp_timestamps").read_text().strip() == "1":
        assert all(p.options.timestamps for p in packets)  # so the comparison compared


_TCPDUMP_LINE = re.compile(
    r" IP6? (?P<src>\S+)\.(?P<sport>\d+) > (?P<dst>\S+)\.(?P<dport>\d+): "
    r"Flags \[(?P<flags>[^\]]*)\](?:, seq (?P<seq>\d+)(?::\d+)?)?(?:, ack (?P<ack>\d+))?"
    r", win (?P<win>\d+).*, length (?P<len>\d+)"
)
_TCPDUMP_FLAGS = {
    "F": Flags.FIN,
    "S": Flags.SYN,
    "R": Flags.RST,
    "P": Flags.PSH,
    ".": Flags.ACK,
    "U": Flags.URG,
    "E": Flags.ECE,
    "W": Flags.CWR,
}


def test_tcpdump_reads_our_pcap_field_for_field(listener: socket.socket, tmp_path: Path) -> None:
    tcpdump = needs.tool("tcpdump")
    packets = _capture_one_conversation(listener)
    path = tmp_path / "lo.pcap"
    write_pcap(path, packets)

    out = subprocess.run(
        [tcpdump, "-nn", "-S", "-r", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line]

    assert len(lines) == len(packets)
    for line, p in zip(lines, packets, strict=True):
        m = _TCPDUMP_LINE.search(line)
        assert m is not None, line
        flags = Flags(0)
        for char in m["flags"]:
            flags |= _TCPDUMP_FLAGS[char]
        assert flags == p.flags, line
        assert (int(m["sport"]), int(m["dport"])) == (p.src_port, p.dst_port)
        if m["seq"] is not None:  # tcpdump omits seq on pure ACKs
            assert int(m["seq"]) == p.seq
        if m["ack"] is not None:
            assert int(m["ack"]) == p.ack
        assert (int(m["win"]), int(m["len"])) == (p.window, p.payload_len)


def _capture_one_conversation(listener: socket.socket) -> list[Packet]:
    port = listener.getsockname()[1]
    with Sniffer("lo", [port]) as sniffer:
        _run_conversation("asyncio", listener, b"hello")
        assert sniffer.wait_for(_closed, timeout=5)
        return sniffer.drain()


def test_ipv6_loopback_capture() -> None:
    try:
        listener = _listener(socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener:
        packets = _capture_one_conversation(listener)
    assert {p.ip_version for p in packets} == {6}
    assert {p.src for p in packets} == {"::1"}
    assert all(c.ok for c in check_handshake(packets) + check_fin_acks(packets))


def test_drain_returns_only_segments_since_the_previous_drain(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with Sniffer("lo", [port]) as sniffer:
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        with client:
            assert sniffer.wait_for(lambda ps: len(ps) >= 3, timeout=5)
            step1 = sniffer.drain()
            client.sendall(b"abc")
            assert sniffer.wait_for(lambda ps: any(p.payload_len == 3 for p in ps), 5)
            step2 = sniffer.drain()
            # linger {on, 0}: close with RST, leaving no TIME_WAIT behind
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert [p.flags.text(",") for p in step1[:3]] == ["SYN", "SYN,ACK", "ACK"]
    assert not any(Flags.SYN in p.flags for p in step2)
    assert any(p.payload_len == 3 for p in step2)


def test_flush_hands_over_what_crossed_before_it_however_late_the_thread_reads(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A starved capture thread (a loaded machine): each read begins 0.3 s late. A drain()
    # right after the handshake would then hand over nothing; after flush() it has all three.
    port = listener.getsockname()[1]
    sniffer = Sniffer("lo", [port])
    read_batch = sniffer._read_batch

    def late(sock: socket.socket) -> bool:
        time.sleep(0.3)
        return read_batch(sock)

    monkeypatch.setattr(sniffer, "_read_batch", late)
    with sniffer:
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        with client:
            # connect() returned: the SYN, the SYN-ACK and the ACK have crossed lo.
            assert sniffer.flush(timeout=5)
            flushed = sniffer.drain()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert [p.flags.text(",") for p in flushed[:3]] == ["SYN", "SYN,ACK", "ACK"]
    assert not sniffer.flush(timeout=5)  # stopped: nothing to wait for


def test_kernel_bpf_filter_keeps_other_ports_out_of_user_space(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with _listener() as noise:
        noise_addr = noise.getsockname()[:2]
        with (
            Sniffer("lo", [port], kernel_filter=True) as filtered,
            Sniffer("lo", [port], kernel_filter=False) as unfiltered,
        ):
            conn = socket.create_connection(noise_addr, timeout=5)
            conn.close()
            # both saw the noise traffic reach the socket, or not, by now: wait for the
            # unfiltered one to count it
            deadline = time.monotonic() + 5
            while unfiltered.stats.other_traffic == 0 and time.monotonic() < deadline:
                unfiltered.wait_for(lambda ps: False, timeout=0.05)
        assert unfiltered.stats.other_traffic > 0
        assert not unfiltered.stats.kernel_filter
    assert filtered.stats.kernel_filter
    assert filtered.stats.other_traffic == 0
    assert filtered.drain() == []


def test_stop_is_prompt_even_with_a_long_poll_interval() -> None:
    sniffer = Sniffer("lo", [9], poll_interval=30.0)
    sniffer.start()
    began = time.monotonic()
    sniffer.stop()
    # Prompt means: not waiting out the 30 s poll interval. 10 s is far from both that and
    # the few ms it takes alone, so a loaded 2-core machine cannot fail it by being slow.
    assert time.monotonic() - began < 10.0
    assert not sniffer.running


def test_socket_factory_is_used_to_create_the_packet_socket() -> None:
    made: list[socket.socket] = []

    def factory() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        made.append(sock)
        return sock

    with Sniffer("lo", [9], socket_factory=factory):
        pass
    assert len(made) == 1
    assert made[0].fileno() == -1  # closed by stop()


def test_unknown_interface_is_a_network_error() -> None:
    with pytest.raises(NetworkError, match="hl-nosuch0"):
        Sniffer("hl-nosuch0", [9]).start()
