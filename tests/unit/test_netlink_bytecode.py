"""The inet_diag port-filter bytecode: exact bytes for 1..3 ports, and its meaning.

Meaning is checked with a transcription of the kernel's own interpreter and validator
(``inet_diag_bc_run`` and ``inet_diag_bc_audit`` in ``net/ipv4/inet_diag.c``), so the jump
offsets are tested the way the kernel reads them: a true test advances ``yes`` bytes, a false
one ``no`` bytes, JMP always takes ``no``, and only a program that ends exactly at its end
accepts. The integration tests then compare with ``ss`` on real sockets.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_lab.observe.netlink_codec import MAX_FILTER_PORTS, port_filter_bytecode

NOP, JMP, S_GE, S_LE, D_GE, D_LE = 0, 1, 2, 3, 4, 5


def op(code: int, yes: int, no: int) -> bytes:
    return struct.pack("=BBH", code, yes, no)


def run(bytecode: bytes, sport: int, dport: int) -> bool:
    """``inet_diag_bc_run`` for the port ops."""
    position, remaining = 0, len(bytecode)
    while remaining > 0:
        code, yes, no = struct.unpack_from("=BBH", bytecode, position)
        if code == JMP:
            ok = False
        elif code == NOP:
            ok = True
        else:
            (port,) = struct.unpack_from("=H", bytecode, position + 6)
            value = sport if code in (S_GE, S_LE) else dport
            ok = value >= port if code in (S_GE, D_GE) else value <= port
        step = yes if ok else no
        position += step
        remaining -= step
    return remaining == 0


def audit(bytecode: bytes) -> bool:
    """``inet_diag_bc_audit`` (with ``valid_cc``) for the port ops: would the kernel take it?"""

    def valid_cc(cc: int) -> bool:
        position, length = 0, len(bytecode)
        while length >= 0:
            if cc > length:
                return False
            if cc == length:
                return True
            _, yes, _ = struct.unpack_from("=BBH", bytecode, position)
            if yes < 4 or yes % 4:
                return False
            position += yes
            length -= yes
        return False

    position, length = 0, len(bytecode)
    while length > 0:
        code, yes, no = struct.unpack_from("=BBH", bytecode, position)
        min_len = 4
        if code in (S_GE, S_LE, D_GE, D_LE):
            min_len = 8
            if length < min_len:
                return False
        elif code not in (JMP, NOP):
            return False
        if code != NOP:
            if no < min_len or no > length + 4 or no % 4:
                return False
            if no < length and not valid_cc(length - no):
                return False
        if yes < min_len or yes > length + 4 or yes % 4:
            return False
        position += yes
        length -= yes
    return length == 0


def test_one_port_is_sport_or_dport_like_ss() -> None:
    expected = b"".join(
        [
            op(S_GE, 8, 20) + op(0, 0, 80),  # sport >= 80, else try dport
            op(S_LE, 8, 12) + op(0, 0, 80),  # sport <= 80, else try dport
            op(JMP, 4, 20),  # sport == 80: jump to the end (accept)
            op(D_GE, 8, 20) + op(0, 0, 80),  # else: to end + 4 (reject)
            op(D_LE, 8, 12) + op(0, 0, 80),  # else reject; true: at the end (accept)
        ]
    )
    assert port_filter_bytecode([80]) == expected


def test_two_and_three_ports_chain_four_and_six_tests() -> None:
    two = port_filter_bytecode([443, 80, 80])  # sorted, duplicates dropped
    assert len(two) == 4 * 20 - 4
    ports = [struct.unpack_from("=H", two, at + 6)[0] for at in range(0, len(two), 20)]
    assert ports == [80, 80, 443, 443]
    three = port_filter_bytecode([1, 2, 3])
    assert len(three) == 6 * 20 - 4
    assert three[-16:] == op(D_GE, 8, 20) + op(0, 0, 3) + op(D_LE, 8, 12) + op(0, 0, 3)
    # every JMP lands exactly on the end
    for at in range(16, len(three), 20):
        code, yes, no = struct.unpack_from("=BBH", three, at)
        assert (code, yes, at + no) == (JMP, 4, len(three))


@pytest.mark.parametrize("ports", [[80], [80, 443], [1, 2, 65535], [22, 8000, 8001]])
def test_the_kernel_validator_accepts_the_program(ports: list[int]) -> None:
    assert audit(port_filter_bytecode(ports))


@pytest.mark.parametrize("ports", [[80], [80, 443], [1, 2, 65535]])
def test_program_matches_exactly_sockets_with_either_port_in_the_set(ports: list[int]) -> None:
    bytecode = port_filter_bytecode(ports)
    probes = sorted({0, 1, 2, 3, 65534, 65535} | {p + d for p in ports for d in (-1, 0, 1)})
    probes = [p for p in probes if 0 <= p <= 65535]
    for sport in probes:
        for dport in probes:
            assert run(bytecode, sport, dport) == (sport in ports or dport in ports), (
                sport,
                dport,
            )


@given(
    st.sets(st.integers(1, 65535), min_size=1, max_size=5),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
def test_program_is_or_of_equalities_for_any_ports(
    ports: set[int], sport: int, dport: int
) -> None:
    bytecode = port_filter_bytecode(ports)
    assert audit(bytecode)
    for probe_sport, probe_dport in [(sport, dport), (min(ports), dport), (sport, max(ports))]:
        expected = probe_sport in ports or probe_dport in ports
        assert run(bytecode, probe_sport, probe_dport) == expected


def test_largest_program_still_fits_the_16_bit_offsets() -> None:
    bytecode = port_filter_bytecode(range(1, MAX_FILTER_PORTS + 1))
    assert audit(bytecode)
    assert run(bytecode, 7, 0)
    assert not run(bytecode, MAX_FILTER_PORTS + 1, 0)


@pytest.mark.parametrize(
    ("ports", "match"),
    [([], "at least one"), ([0], "out of range"), ([65536], "out of range")],
)
def test_bad_port_sets_are_refused(ports: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        port_filter_bytecode(ports)


def test_too_many_ports_are_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        port_filter_bytecode(range(1, MAX_FILTER_PORTS + 2))
