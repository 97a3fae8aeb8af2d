"""Flags, segments and 32-bit sequence arithmetic."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_lab.tcp import (
    SEQ_SPACE,
    Flags,
    Segment,
    absolute_seq,
    relative_seq,
    seq_add,
    seq_diff,
    seq_le,
    seq_lt,
)

u32 = st.integers(min_value=0, max_value=2**32 - 1)
flag_sets = st.integers(min_value=0, max_value=0xFF).map(Flags)


def test_flags_have_their_wire_bit_values() -> None:
    assert {f.name: f.value for f in Flags} == {
        "FIN": 0x01,
        "SYN": 0x02,
        "RST": 0x04,
        "PSH": 0x08,
        "ACK": 0x10,
        "URG": 0x20,
        "ECE": 0x40,
        "CWR": 0x80,
    }


def test_flags_text_lists_lowest_bit_first() -> None:
    assert (Flags.ACK | Flags.SYN).text() == "SYN+ACK"
    assert (Flags.ACK | Flags.FIN | Flags.PSH).text(",") == "FIN,PSH,ACK"
    assert Flags(0).text() == ""


def test_flags_from_text_accepts_common_spellings() -> None:
    assert Flags.from_text("SYN,ACK") == Flags.SYN | Flags.ACK
    assert Flags.from_text("syn+ack") == Flags.SYN | Flags.ACK
    assert Flags.from_text(" FIN | ACK ") == Flags.FIN | Flags.ACK
    assert Flags.from_text("RST ACK") == Flags.RST | Flags.ACK
    assert Flags.from_text("") == Flags(0)


def test_flags_from_text_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="XMAS"):
        Flags.from_text("SYN,XMAS")


@given(flag_sets)
def test_flags_text_round_trips(flags: Flags) -> None:
    assert Flags.from_text(flags.text()) == flags
    assert Flags.from_text(flags.text(",")) == flags


def test_syn_and_fin_each_consume_one_sequence_number() -> None:
    assert Segment(Flags.SYN, seq=100, ack=0, payload_len=0).seg_len == 1
    assert Segment(Flags.SYN | Flags.ACK, seq=300, ack=101, payload_len=0).seg_len == 1
    assert Segment(Flags.ACK, seq=101, ack=301, payload_len=0).seg_len == 0
    assert Segment(Flags.FIN | Flags.ACK, seq=5, ack=9, payload_len=10).seg_len == 11
    assert Segment(Flags.SYN | Flags.FIN, seq=5, ack=0, payload_len=3).seg_len == 5


def test_handshake_acks_are_the_peers_next_sequence_number() -> None:
    # Seed claim 1: SYN seq=j, SYN+ACK ack=j+1 seq=k, ACK ack=k+1.
    syn = Segment(Flags.SYN, seq=1000, ack=0, payload_len=0)
    syn_ack = Segment(Flags.SYN | Flags.ACK, seq=5000, ack=syn.next_seq, payload_len=0)
    ack = Segment(Flags.ACK, seq=syn.next_seq, ack=syn_ack.next_seq, payload_len=0)
    assert (syn_ack.ack, ack.ack) == (1001, 5001)
    assert ack.relative_to(isn=1000, peer_isn=5000) == Segment(
        Flags.ACK, seq=1, ack=1, payload_len=0
    )


def test_next_seq_wraps_around_at_two_to_the_32() -> None:
    assert Segment(Flags.SYN, seq=2**32 - 1, ack=0, payload_len=0).next_seq == 0
    assert Segment(Flags.ACK, seq=2**32 - 2, ack=0, payload_len=5).next_seq == 3


def test_flags_text_of_a_segment_uses_commas() -> None:
    assert Segment(Flags.SYN | Flags.ACK, seq=0, ack=1, payload_len=0).flags_text == "SYN,ACK"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq": -1},
        {"seq": 2**32},
        {"ack": 2**32},
        {"payload_len": -1},
        {"window": 2**16},
        {"window": -1},
    ],
)
def test_segment_rejects_values_outside_the_header_fields(kwargs: dict[str, int]) -> None:
    fields = {"seq": 0, "ack": 0, "payload_len": 0, "window": 0} | kwargs
    with pytest.raises(ValueError, match="must be"):
        Segment(Flags.ACK, **fields)


def test_segment_is_immutable() -> None:
    segment = Segment(Flags.ACK, seq=1, ack=1, payload_len=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        segment.seq = 2  # type: ignore[misc]


def test_relative_to_keeps_ack_when_the_ack_flag_is_off() -> None:
    syn = Segment(Flags.SYN, seq=2**32 - 1, ack=0, payload_len=0)
    assert syn.relative_to(isn=2**32 - 1, peer_isn=7) == Segment(
        Flags.SYN, seq=0, ack=0, payload_len=0
    )


def test_relative_seq_is_wireshark_style_across_the_wrap() -> None:
    isn = 2**32 - 2
    assert relative_seq(isn, isn) == 0
    assert relative_seq(0, isn) == 2
    assert absolute_seq(2, isn) == 0


def test_relative_seq_rejects_out_of_range_numbers() -> None:
    with pytest.raises(ValueError, match="must be"):
        relative_seq(2**32, 0)
    with pytest.raises(ValueError, match="must be"):
        absolute_seq(0, -1)


def test_sequence_order_follows_the_signed_difference() -> None:
    assert seq_lt(2**32 - 1, 0)
    assert not seq_lt(0, 2**32 - 1)
    assert seq_le(5, 5)
    assert not seq_lt(5, 5)
    assert seq_diff(1, 2**32 - 1) == 2
    assert seq_add(2**32 - 1, 1) == 0
    assert seq_add(0, -1) == 2**32 - 1


@given(isn=u32, rel=u32)
def test_relative_and_absolute_are_inverses(isn: int, rel: int) -> None:
    assert relative_seq(absolute_seq(rel, isn), isn) == rel
    assert absolute_seq(relative_seq(rel, isn), isn) == rel


@given(
    flags=flag_sets,
    seq=u32,
    ack=u32,
    payload_len=st.integers(min_value=0, max_value=2**20),
)
def test_next_seq_is_seq_plus_seg_len_modulo_two_to_the_32(
    flags: Flags, seq: int, ack: int, payload_len: int
) -> None:
    segment = Segment(flags, seq=seq, ack=ack, payload_len=payload_len)
    assert 0 <= segment.next_seq < SEQ_SPACE
    assert segment.next_seq == (seq + segment.seg_len) % SEQ_SPACE
    assert relative_seq(segment.next_seq, seq) == segment.seg_len
    assert segment.seg_len == payload_len + (Flags.SYN in flags) + (Flags.FIN in flags)


@given(a=u32, b=u32)
def test_sequence_comparison_is_antisymmetric(a: int, b: int) -> None:
    assert -(2**31) <= seq_diff(a, b) < 2**31
    assert seq_add(b, seq_diff(a, b)) == a
    if a != b and seq_diff(a, b) != -(2**31):
        assert seq_lt(a, b) != seq_lt(b, a)
    assert seq_le(a, b) or seq_lt(b, a)


@given(isn=u32, rel=st.integers(min_value=0, max_value=2**31 - 1), n=st.integers(0, 2**20))
def test_order_is_preserved_within_half_the_space_after_wrap(isn: int, rel: int, n: int) -> None:
    a = absolute_seq(rel, isn)
    b = seq_add(a, n)
    assert seq_le(a, b)
