"""``--ip 6`` without sockets: the one family rule, the one address format, what each layer
chooses for IPv6, and that IPv4 stays as it was."""

from __future__ import annotations

import socket
import struct

import pytest

from handshake_lab.agent.run import AgentUsageError, check_bind
from handshake_lab.capture import decode_frame
from handshake_lab.cli.app import IpVersion, ip_version
from handshake_lab.errors import UsageError
from handshake_lab.lab.runner import _port_of
from handshake_lab.net.raw import checksum, tcp_segment
from handshake_lab.observe.base import Address, family_of
from handshake_lab.observe.fake import parse_address
from handshake_lab.observe.ss import ss_command
from handshake_lab.placement.placed import loopback_host
from handshake_lab.spec.model import DUAL_STACK
from handshake_lab.topo.pair import (
    CLIENT_ADDR,
    CLIENT_ADDR6,
    SERVER_ADDR,
    SERVER_ADDR6,
    NetnsPair,
)


@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("127.0.0.1", socket.AF_INET),
        ("198.18.0.1", socket.AF_INET),
        ("::1", socket.AF_INET6),
        ("2001:db8:198:18::2", socket.AF_INET6),
    ],
)
def test_the_family_of_a_socket_follows_its_literal_address(
    host: str, family: socket.AddressFamily
) -> None:
    assert family_of(host) == family


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("127.0.0.1", 80), "127.0.0.1:80"),
        (Address("::1", 80), "[::1]:80"),
        (Address("2001:db8:198:18::1", 65535), "[2001:db8:198:18::1]:65535"),
    ],
)
def test_addresses_print_as_ss_prints_them_and_parse_back(address: Address, text: str) -> None:
    assert str(address) == text
    assert parse_address(text) == address
    assert _port_of(text) == address.port  # the runner's "host:port" split is v6-safe


def test_ss_reads_one_family_per_run() -> None:
    assert "-6" in ss_command([80], ipv6_only=True)
    assert "-4" not in ss_command([80], ipv6_only=True)
    assert "-4" in ss_command([80], ipv4_only=True)
    assert not {"-4", "-6"} & set(ss_command([80]))


def test_loopback_and_namespace_addresses_per_ip_version() -> None:
    assert (loopback_host(4), loopback_host(6)) == ("127.0.0.1", "::1")
    v4, v6 = NetnsPair(), NetnsPair(ip=6)  # not created: no kernel object
    assert (v4.server_addr, v4.client_addr, v4.prefix_len) == (SERVER_ADDR, CLIENT_ADDR, 24)
    assert (v6.server_addr, v6.client_addr, v6.prefix_len) == (SERVER_ADDR6, CLIENT_ADDR6, 64)
    # Documentation prefix (RFC 3849): never a routed or a LAN address.
    assert all(a.startswith("2001:db8:") for a in (SERVER_ADDR6, CLIENT_ADDR6))
    assert (v4.server_addr6, v6.server_addr6) == (None, None)
    # A dual-stack lab's pair: the IPv4 addresses, and the IPv6 ones beside them.
    both = NetnsPair(ip=DUAL_STACK)
    assert (both.server_addr, both.client_addr, both.prefix_len) == (SERVER_ADDR, CLIENT_ADDR, 24)
    assert (both.server_addr6, both.client_addr6) == (SERVER_ADDR6, CLIENT_ADDR6)
    with pytest.raises(ValueError, match="4, 6 or 46"):
        NetnsPair(ip=5)


def test_dash_6_is_short_for_ip_6_and_contradicting_it_is_a_usage_error() -> None:
    assert ip_version(None, False) == 4
    assert ip_version(IpVersion.v6, False) == 6
    assert ip_version(None, True) == 6
    assert ip_version(IpVersion.v6, True) == 6
    with pytest.raises(UsageError, match="contradict"):
        ip_version(IpVersion.v4, True)


def test_an_agent_binds_an_ipv6_address_but_never_a_wildcard() -> None:
    assert check_bind("2001:db8:198:18::1") == "2001:db8:198:18::1"
    for wildcard in ("::", "0.0.0.0"):
        with pytest.raises(AgentUsageError, match="every interface"):
            check_bind(wildcard)


def _pseudo_sum_ok(src: str, dst: str, segment: bytes) -> bool:
    """Verify a TCP checksum the receiving kernel's way: the sum over pseudo-header and
    segment, checksum field included, is 0xFFFF (so its complement is 0)."""
    family = family_of(src)
    a, b = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    if family == socket.AF_INET6:
        pseudo = a + b + struct.pack("!I3xB", len(segment), socket.IPPROTO_TCP)
    else:
        pseudo = a + b + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    return checksum(pseudo + segment) == 0


@pytest.mark.parametrize(
    ("src", "dst"), [(CLIENT_ADDR, SERVER_ADDR), (CLIENT_ADDR6, SERVER_ADDR6), ("::1", "::1")]
)
def test_the_stale_syn_checksum_is_right_for_both_versions(src: str, dst: str) -> None:
    segment = tcp_segment(src, dst, 40000, 8080, seq=123456)
    assert _pseudo_sum_ok(src, dst, segment)
    # A different destination must not verify: the pseudo-header is really in the sum.
    other = "2001:db8:198:18::9" if ":" in src else "198.18.0.9"
    assert other != dst
    assert not _pseudo_sum_ok(src, other, segment)


def test_mixed_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="different IP versions"):
        tcp_segment("198.18.0.2", "::1", 1, 2, seq=0)


def test_an_ipv6_segment_on_lo_decodes_with_its_addresses() -> None:
    tcp = tcp_segment("::1", "::1", 40000, 8080, seq=7)
    ip = (
        struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64)
        + socket.inet_pton(socket.AF_INET6, "::1") * 2
    )
    packet = decode_frame(bytes(12) + b"\x86\xdd" + ip + tcp)  # lo: zeroed MACs
    assert packet is not None
    assert (packet.ip_version, packet.src, packet.src_port, packet.seq) == (6, "::1", 40000, 7)
