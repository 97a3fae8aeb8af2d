"""IPv6 segments as ``--ip 6`` captures them, written to a pcap, read back by tshark and tcpdump.

The frames are built by hand (no socket, no privileges): an Ethernet header with EtherType
0x86DD, as AF_PACKET delivers frames on lo and on a veth, an IPv6 header with next header TCP,
and the TCP header the stale-SYN lab sends (``net.raw.tcp_segment``, whose IPv6 pseudo-header
checksum both tools verify). Our decoder and both tools must read the same fields.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from handshake_lab.capture import Packet, decode_frame, write_pcap
from handshake_lab.net.raw import tcp_segment
from handshake_lab.tcp.segments import Flags
from handshake_lab.topo.pair import CLIENT_ADDR6, SERVER_ADDR6
from tests import needs

CLIENT, SERVER = CLIENT_ADDR6, SERVER_ADDR6
SEGMENTS = (  # (src, dst, sport, dport, seq, ack, flags): a handshake and a reset
    (CLIENT, SERVER, 40000, 8080, 1000, 0, Flags.SYN),
    (SERVER, CLIENT, 8080, 40000, 5000, 1001, Flags.SYN | Flags.ACK),
    (CLIENT, SERVER, 40000, 8080, 1001, 5001, Flags.ACK),
    (CLIENT, SERVER, 40000, 8080, 1001, 0, Flags.RST),
)


def v6_frame(src: str, dst: str, tcp: bytes) -> bytes:
    ip = (
        struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
    )
    return bytes(12) + struct.pack("!H", 0x86DD) + ip + tcp  # lo's zeroed MAC addresses


@pytest.fixture
def packets() -> list[Packet]:
    out: list[Packet] = []
    for index, (src, dst, sport, dport, seq, ack, flags) in enumerate(SEGMENTS):
        tcp = tcp_segment(src, dst, sport, dport, seq=seq, ack=ack, flags=flags)
        packet = decode_frame(v6_frame(src, dst, tcp), timestamp=index, wall_time=1e9 + index)
        assert packet is not None
        out.append(packet)
    return out


def test_our_decoder_reads_the_ipv6_frames(packets: list[Packet]) -> None:
    got = [
        (p.ip_version, p.src, p.dst, p.src_port, p.dst_port, p.seq, p.ack, p.flags)
        for p in packets
    ]
    assert got == [(6, *segment) for segment in SEGMENTS]


def test_tshark_reads_our_ipv6_pcap_and_the_checksums_are_right(
    packets: list[Packet], tmp_path: Path
) -> None:
    tshark = needs.tool("tshark")
    path = tmp_path / "v6.pcap"
    write_pcap(path, packets)
    fields: tuple[str, ...] = ("ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.seq_raw")
    fields += ("tcp.ack_raw", "tcp.flags", "tcp.checksum.status")
    cmd = [tshark, "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-T", "fields"]
    cmd += ["-E", "separator=,", *(arg for name in fields for arg in ("-e", name))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.split(",") for line in out.splitlines() if line]
    assert len(rows) == len(packets)
    for row, p in zip(rows, packets, strict=True):
        src, dst, sport, dport, seq, ack, flags, checksum = row
        assert (src, dst, int(sport), int(dport)) == (p.src, p.dst, p.src_port, p.dst_port)
        assert int(seq) == p.seq
        if p.flags & Flags.ACK:
            assert int(ack) == p.ack
        assert int(flags, 16) == int(p.flags)
        assert checksum == "1", row  # 1: good (0 would be bad, 2 unverified)


_TCPDUMP = re.compile(
    r"IP6 .*?\) (?P<src>[0-9a-f:]+)\.(?P<sport>\d+) > (?P<dst>[0-9a-f:]+)\.(?P<dport>\d+): "
    r"Flags \[(?P<flags>[^\]]*)\], cksum 0x[0-9a-f]+ \((?P<cksum>[^)]*)\)"
)


def test_tcpdump_reads_our_ipv6_pcap_and_the_checksums_are_right(
    packets: list[Packet], tmp_path: Path
) -> None:
    tcpdump = needs.tool("tcpdump")
    path = tmp_path / "v6.pcap"
    write_pcap(path, packets)
    out = subprocess.run(
        [tcpdump, "-nn", "-S", "-vv", "-r", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    matches = [_TCPDUMP.search(line) for line in out.splitlines() if "IP6" in line]
    assert len(matches) == len(packets), out
    for m, p in zip(matches, packets, strict=True):
        assert m is not None, out
        assert (m["src"], m["dst"]) == (p.src, p.dst)
        assert (int(m["sport"]), int(m["dport"])) == (p.src_port, p.dst_port)
        assert m["cksum"] == "correct", out
