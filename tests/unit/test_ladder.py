"""The ladder diagram: exact text for a small conversation, and the 80-column limit."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from handshake_lab.capture.conversation import Conversation, conversation
from handshake_lab.observe.base import Address
from handshake_lab.record.codec import read_run
from handshake_lab.record.run import ConversationView, LadderRow
from handshake_lab.render import ladder
from handshake_lab.render.ladder import Annotation
from tests.unit.test_capture_conversation import C, S, pkt, session


def view(conv: Conversation) -> ConversationView:
    """The run record's view of a conversation the capture decoded (times in ms)."""
    return ConversationView(
        index=0,
        client=str(Address(*conv.client)),
        server=str(Address(*conv.server)),
        rows=tuple(LadderRow(e.packet.timestamp * 1000, e.sender, e.label) for e in conv.entries),
        states=(),
    )


def in_ms(annotations: Iterable[Annotation]) -> list[Annotation]:
    return [(t * 1000, side, state) for t, side, state in annotations]


def ladder_lines(
    conv: Conversation, annotations: Iterable[Annotation] = (), width: int = 80
) -> list[str]:
    return ladder.ladder_lines(view(conv), in_ms(annotations), width=width)


def render_ladder(conv: Conversation, annotations: Iterable[Annotation] = ()) -> str:
    return ladder.render_ladder(view(conv), in_ms(annotations))


def test_handshake_ladder_with_state_annotations_exact_text() -> None:
    conv = conversation(session()[:4])
    annotations: list[Annotation] = [
        (-0.0002, "server", "LISTEN"),
        (-0.0001, "client", "SYN_SENT"),
        (0.00006, "client", "ESTABLISHED"),
        (0.00006, "server", "SYN_RECV"),
        (0.00011, "server", "ESTABLISHED"),
    ]

    text = render_ladder(conv, annotations)

    assert text == "\n".join(
        [
            "client 127.0.0.1:40000 <-> server 127.0.0.1:8080",
            "   t (ms) client       |                                          | server",
            "    0.000 SYN_SENT     |--SYN seq=0------------------------------>| LISTEN",
            "    0.050 ESTABLISHED  |<--SYN,ACK seq=0 ack=1--------------------| SYN_RECV",
            "    0.100              |--ACK seq=1 ack=1------------------------>| ESTABLISHED",
            "    1.000              |--PSH,ACK seq=1 ack=1 len=5-------------->|",
        ]
    )


def test_a_state_the_application_causes_sits_on_the_row_of_the_segment_it_sends() -> None:
    # close() is traced as ESTABLISHED -> FIN_WAIT1 a few microseconds before its FIN is
    # captured; "the last packet before" would put it on the previous, unrelated row.
    fin = pkt(C, S, "FIN,ACK", 1006, 5001, t=0.030)
    conv = conversation([*session()[:4], fin])
    lines = ladder_lines(conv, [(0.02998, "client", "FIN_WAIT1")])
    row = next(line for line in lines if "FIN_WAIT1" in line)
    assert "FIN,ACK" in row


def test_a_state_far_from_every_segment_gets_its_own_row() -> None:
    conv = conversation(session()[:1])
    lines = ladder_lines(conv, [(-1.0, "server", "LISTEN")])
    assert lines[2] == "-1000.000              |                                          | LISTEN"


def test_a_second_state_for_the_same_side_and_row_gets_its_own_row() -> None:
    conv = conversation(session()[:1])
    lines = ladder_lines(conv, [(0.0, "client", "SYN_SENT"), (0.0, "client", "CLOSE")])

    assert lines[2:] == [
        "    0.000 SYN_SENT     |--SYN seq=0------------------------------>|",
        "    0.000 CLOSE        |                                          |",
    ]


def test_a_state_left_the_instant_it_was_entered_gets_no_row() -> None:
    # time-wait-syn (a real netns run): the SYN that reopens TIME_WAIT ends it, recorded at the
    # new socket's time (TIME_WAIT -> ABSENT, then ABSENT -> SYN_RECV at the same instant):
    # the record's conversation lists no ABSENT there, so the ladder has no ABSENT row.
    record = read_run(Path(__file__).parent / "data" / "runs" / "time-wait-syn.netns.jsonl")
    moves = [(t["old"], t["new"], t["cause"]) for t in record.transitions()]
    assert ("TIME_WAIT", "ABSENT", "SYN") in moves
    reopened = [
        conv
        for conv in record.conversations()
        if conv.rows and any(state == "SYN_RECV" for _, _, state in conv.states)
    ]
    assert len(reopened) >= 2  # the first connection, and each reopening of its 4-tuple
    for conv in reopened:
        # The handshake's last ACK is where the server's new socket appears: SYN_RECV there,
        # not an ABSENT that lasted no time (before this, a row of its own and SYN_RECV below).
        lines = ladder.ladder_lines(conv)
        ack = next(line for line in lines if "|--ACK seq=1 ack=1-" in line)
        assert ack.endswith("| SYN_RECV"), lines


def test_long_labels_wrap_above_a_bare_arrow_and_no_line_exceeds_80_columns() -> None:
    # Mid-stream capture: bases are the first seqs seen, so later numbers have 10 digits.
    far = 4_294_967_295
    packets = [
        pkt(C, S, "ACK", 0, 0, t=0.0),
        pkt(S, C, "ACK", 0, 1, t=0.001),
        pkt(C, S, "FIN,PSH,ACK,URG,ECE,CWR", far, far, 65_535_000, t=86_400.0),
        pkt(S, C, "RST,ACK", far, far, t=99_999.0),
    ]
    conv = conversation(packets)
    annotations: list[Annotation] = [(86_400.5, "client", "A_VERY_LONG_STATE_NAME")]

    lines = ladder_lines(conv, annotations)

    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "seq=4294967295" in text
    assert "ack=4294967295" in text
    assert "len=65535000" in text
    assert "A_VERY_LONG_" in text  # cut to the 12-column state field
    # the wrapped label is followed by a bare arrow pointing at the server
    idx = next(i for i, line in enumerate(lines) if "FIN,PSH,ACK,URG,ECE,CWR" in line)
    assert lines[idx + 1].strip().startswith("|  ")
    assert lines[idx + 2].endswith("->|")
    assert "|<--RST,ACK seq=4294967295 ack=4294967295--|" in lines[-1]  # fits exactly
    assert "8.64e+07" in lines[idx] or "86400000" in lines[idx]


def test_ipv6_title_splits_onto_two_lines_when_too_wide() -> None:
    a = ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:1", 65535)
    b = ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:2", 65534)
    conv = conversation([pkt(a, b, "SYN", 1)])

    lines = ladder_lines(conv)

    assert lines[:2] == [
        "client [2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:65535",
        "server [2001:db8:aaaa:bbbb:cccc:dddd:eeee:2]:65534",
    ]
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize("width", [58, 64, 100])
def test_width_is_respected(width: int) -> None:
    lines = ladder_lines(conversation(session()), width=width)
    assert max(len(line) for line in lines) <= width
    # the server's bar sits where the server column (13 wide) begins
    assert all(line.endswith("|") and len(line) == width - 13 for line in lines[2:])


def test_a_dropped_segment_is_an_arrow_that_stops_short_of_the_receiver() -> None:
    conv = ConversationView(
        index=0,
        client="198.18.0.2:40000",
        server="198.18.0.1:80",
        rows=(
            LadderRow(0.0, "client", "FIN,ACK seq=1 ack=1"),
            LadderRow(1.0, "server", "ACK seq=1 ack=2", dropped=True),
            LadderRow(2.0, "client", "ACK seq=2 ack=2", dropped=True),
        ),
        states=(),
    )
    lines = ladder.ladder_lines(conv)
    assert lines[2].endswith("-->|")
    assert "|   x--ACK seq=1 ack=2---" in lines[3]
    assert lines[4].endswith("---x   |")
    assert max(len(line) for line in lines) <= 80


def test_a_forged_segment_says_so_on_its_arrow() -> None:
    conv = ConversationView(
        index=0,
        client="198.18.0.2:40000",
        server="198.18.0.1:80",
        rows=(
            LadderRow(0.0, "client", "RST seq=1012", forged=True),
            LadderRow(0.1, "server", "ACK seq=1 ack=12"),
        ),
        states=(),
    )
    lines = ladder.ladder_lines(conv)
    assert "|--forged RST seq=1012---" in lines[2]
    assert "forged" not in lines[3]


def test_a_socket_connected_to_itself_is_drawn_against_itself_with_its_states() -> None:
    me = "127.0.0.1:5000"
    conv = ConversationView(
        index=0,
        client=me,
        server=me,
        rows=(LadderRow(0.0, "client", "SYN seq=0"), LadderRow(0.1, "client", "SYN,ACK seq=0")),
        states=((0.0, "client", "SYN_SENT"), (0.1, "client", "SYN_RECV")),
    )
    lines = ladder.ladder_lines(conv)
    assert lines[0] == f"client {me} <-> itself"
    assert lines[1].endswith("| (itself)")
    assert "SYN_SENT" in lines[2]
    assert "SYN_RECV" in lines[3]
