"""Packets on the wire: AF_PACKET capture, frame decoding, conversations, pcap files.

``decode`` and ``conversation`` are pure; ``sniffer`` opens the packet socket (CAP_NET_RAW);
``pcap`` writes classic pcap files that tshark and tcpdump read.
"""

from __future__ import annotations

from handshake_lab.capture.conversation import (
    Check,
    Conversation,
    ConversationEntry,
    check_fin_acks,
    check_handshake,
    conversation,
    conversations,
)
from handshake_lab.capture.decode import DecodeError, LinkType, Packet, TcpOptions, decode_frame
from handshake_lab.capture.pcap import PcapWriter, read_pcap, write_pcap
from handshake_lab.capture.sniffer import Sniffer, SnifferStats

__all__ = [
    "Check",
    "Conversation",
    "ConversationEntry",
    "DecodeError",
    "LinkType",
    "Packet",
    "PcapWriter",
    "Sniffer",
    "SnifferStats",
    "TcpOptions",
    "check_fin_acks",
    "check_handshake",
    "conversation",
    "conversations",
    "decode_frame",
    "read_pcap",
    "write_pcap",
]
