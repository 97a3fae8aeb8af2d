"""Sniffer behaviour that needs no packet socket: privilege errors, timestamps, frame triage."""

from __future__ import annotations

import errno
import socket
import struct
import time

import pytest

from handshake_lab.capture.sniffer import (
    PACKET_OUTGOING,
    SO_TIMESTAMPNS,
    Sniffer,
    _timestamp,
)
from handshake_lab.errors import MissingDependencyError, NetworkError
from tests.unit.test_capture_decode import tcp_header, v4_frame


def _denied() -> socket.socket:
    raise PermissionError(errno.EPERM, "Operation not permitted")


def _no_family() -> socket.socket:
    raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")


def test_missing_cap_net_raw_is_a_one_line_missing_dependency_error() -> None:
    sniffer = Sniffer("lo", [80], socket_factory=_denied)

    with pytest.raises(MissingDependencyError, match="CAP_NET_RAW") as info:
        sniffer.start()

    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, PermissionError)
    assert not sniffer.running


def test_other_socket_errors_are_network_errors() -> None:
    with pytest.raises(NetworkError, match="packet socket"):
        Sniffer("lo", socket_factory=_no_family).start()


def test_stop_and_drain_before_start_are_harmless() -> None:
    sniffer = Sniffer("lo")
    sniffer.stop()
    assert sniffer.drain() == []
    assert sniffer.wait_for(lambda ps: True, timeout=0.0)
    assert not sniffer.wait_for(lambda ps: False, timeout=0.0)


def test_kernel_timestamp_is_read_from_so_timestampns() -> None:
    payload = struct.pack("=qq", 1_700_000_000, 500_000_000)
    assert _timestamp([(socket.SOL_SOCKET, SO_TIMESTAMPNS, payload)]) == 1_700_000_000.5
    assert _timestamp([]) is None


def _addr(pkttype: int, ifname: str = "lo") -> tuple[str, int, int, int, bytes]:
    return (ifname, 0x0800, pkttype, 772, bytes(6))


def test_triage_skips_outgoing_copies_other_ports_and_other_interfaces() -> None:
    sniffer = Sniffer("lo", [8080])
    sniffer.ignore_outgoing = True
    mine = v4_frame(tcp_header(40000, 8080, 1, 0, 0x02))
    other = v4_frame(tcp_header(40000, 9999, 1, 0, 0x02))
    wall = time.time()
    stamp = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("=qq", int(wall), 0))]

    kept = sniffer._handle(mine, stamp, 0, _addr(socket.PACKET_HOST))
    assert kept is not None
    assert kept.wall_time == int(wall)
    # converted to the monotonic clock: close to "now" minus the age of the stamp
    assert abs(kept.timestamp - (time.monotonic() - (time.time() - int(wall)))) < 0.5
    assert sniffer._handle(mine, [], 0, _addr(PACKET_OUTGOING)) is None
    assert sniffer._handle(other, [], 0, _addr(socket.PACKET_HOST)) is None
    assert sniffer._handle(mine, [], 0, _addr(socket.PACKET_HOST, "eth0")) is None
    assert sniffer._handle(mine[:40], [], 0, _addr(socket.PACKET_HOST)) is None

    stats = sniffer.stats
    assert (stats.frames, stats.outgoing_skipped, stats.other_traffic) == (5, 1, 2)
    assert stats.decode_errors == 1


def test_outgoing_copies_are_kept_when_not_on_loopback() -> None:
    sniffer = Sniffer("veth0", None)
    frame = v4_frame(tcp_header(1, 2, 3, 4, 0x10))
    assert sniffer._handle(frame, [], 0, _addr(PACKET_OUTGOING, "veth0")) is not None
