"""The pcap writer's byte layout, checked against the libpcap 2.4 format by hand."""

from __future__ import annotations

import dataclasses
import io
import struct
import sys
from pathlib import Path

import pytest

from handshake_lab.capture.decode import LinkType, Packet
from handshake_lab.capture.pcap import (
    MAGIC_MICRO,
    MAGIC_NANO,
    PcapRecord,
    PcapWriter,
    read_pcap,
    write_pcap,
)
from handshake_lab.tcp.segments import Flags

ENDIAN = "<" if sys.byteorder == "little" else ">"


def packet(frame: bytes, wall_time: float, orig_len: int | None = None) -> Packet:
    return Packet(
        timestamp=0.0,
        wall_time=wall_time,
        interface="lo",
        link_type=LinkType.ETHERNET,
        ip_version=4,
        src="127.0.0.1",
        dst="127.0.0.1",
        src_port=1,
        dst_port=2,
        seq=0,
        ack=0,
        flags=Flags.SYN,
        window=0,
        payload_len=0,
        frame=frame,
        orig_len=len(frame) if orig_len is None else orig_len,
    )


def test_global_header_is_24_bytes_with_microsecond_magic_and_ethernet() -> None:
    buf = io.BytesIO()
    PcapWriter(buf).close()

    assert buf.getvalue() == struct.pack(ENDIAN + "IHHiIII", MAGIC_MICRO, 2, 4, 0, 0, 262144, 1)
    assert buf.getvalue()[:4] in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("a1b2c3d4"))


def test_nanosecond_magic_and_record_layout() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, nanoseconds=True, snaplen=65535) as writer:
        writer.write_frame(b"\xaa" * 60, wall_time=1_700_000_000.25, orig_len=74)

    data = buf.getvalue()
    magic, major, minor, zone, sigfigs, snaplen, link = struct.unpack_from(
        ENDIAN + "IHHiIII", data
    )
    assert (magic, major, minor, zone, sigfigs, snaplen, link) == (
        MAGIC_NANO,
        2,
        4,
        0,
        0,
        65535,
        1,
    )
    sec, frac, caplen, wire = struct.unpack_from(ENDIAN + "IIII", data, 24)
    assert (sec, frac, caplen, wire) == (1_700_000_000, 250_000_000, 60, 74)
    assert data[40:] == b"\xaa" * 60
    assert len(data) == 24 + 16 + 60


def test_microsecond_fraction_rounds_into_the_next_second_not_to_a_million() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as writer:
        writer.write_frame(b"x", wall_time=9.9999999)

    sec, frac = struct.unpack_from(ENDIAN + "II", buf.getvalue(), 24)
    assert (sec, frac) == (10, 0)


def test_frames_longer_than_snaplen_are_cut_and_keep_wire_length() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, snaplen=10) as writer:
        writer.write_frame(b"y" * 30, wall_time=1.0)

    _, _, caplen, wire = struct.unpack_from(ENDIAN + "IIII", buf.getvalue(), 24)
    assert (caplen, wire) == (10, 30)


def test_write_and_read_back_packets_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    packets = [packet(b"\x01" * 54, 1000.5), packet(b"\x02" * 66, 1000.75, orig_len=70)]

    assert write_pcap(path, packets) == 2

    link, records = read_pcap(path)
    assert link == LinkType.ETHERNET
    assert records == [
        PcapRecord(1000.5, b"\x01" * 54, 54),
        PcapRecord(1000.75, b"\x02" * 66, 70),
    ]


def test_caller_owned_stream_is_flushed_not_closed() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf):
        pass
    assert not buf.closed


def test_packet_of_another_link_type_is_refused() -> None:
    raw = dataclasses.replace(packet(b"x", 0.0), link_type=LinkType.RAW)
    with pytest.raises(ValueError, match="link type"), PcapWriter(io.BytesIO()) as writer:
        writer.write_packet(raw)


def test_reader_rejects_what_is_not_classic_pcap(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(bytes.fromhex("0a0d0d0a") + bytes(40))
    with pytest.raises(ValueError, match="not a classic pcap"):
        read_pcap(path)


def test_reader_reads_big_endian_files(tmp_path: Path) -> None:
    path = tmp_path / "be.pcap"
    path.write_bytes(
        struct.pack(">IHHiIII", MAGIC_MICRO, 2, 4, 0, 0, 65535, 101)
        + struct.pack(">IIII", 5, 500000, 3, 3)
        + b"abc"
    )
    link, records = read_pcap(path)
    assert link == LinkType.RAW
    assert records == [PcapRecord(5.5, b"abc", 3)]
