"""The classic BPF port filter, run in a small interpreter of the opcodes it uses."""

from __future__ import annotations

import struct

import pytest

from handshake_lab.capture.bpf import MAX_PORTS, Insn, tcp_ports_program
from tests.unit.test_capture_decode import ether, ipv4, ipv6, tcp_header, v4_frame


def run(program: list[Insn], pkt: bytes) -> int:
    """Classic BPF semantics for the opcodes the filter uses; out-of-range loads reject."""
    a = x = 0
    pc = 0
    while True:
        insn = program[pc]
        pc += 1
        code, k = insn.code, insn.k
        try:
            if code == 0x28:  # ldh [k]
                a = struct.unpack_from("!H", pkt, k)[0]
            elif code == 0x30:  # ldb [k]
                a = pkt[k]
            elif code == 0x48:  # ldh [x + k]
                a = struct.unpack_from("!H", pkt, x + k)[0]
            elif code == 0xB1:  # ldxb 4*([k]&0xf)
                x = 4 * (pkt[k] & 0x0F)
            elif code == 0x15:  # jeq #k
                pc += insn.jt if a == k else insn.jf
            elif code == 0x45:  # jset #k
                pc += insn.jt if a & k else insn.jf
            elif code == 0x05:  # ja k
                pc += k
            elif code == 0x06:  # ret #k
                return k
            else:
                raise AssertionError(f"opcode {code:#x} not expected in this program")
        except (IndexError, struct.error):
            return 0


PORTS = [8080, 40000]


@pytest.mark.parametrize(
    ("frame", "accepted"),
    [
        pytest.param(v4_frame(tcp_header(40000, 9, 1, 2, 0x02)), True, id="v4-sport"),
        pytest.param(v4_frame(tcp_header(9, 8080, 1, 2, 0x02)), True, id="v4-dport"),
        pytest.param(v4_frame(tcp_header(9, 10, 1, 2, 0x02)), False, id="v4-other-ports"),
        pytest.param(
            ether(ipv6("::1", "::1", tcp_header(9, 40000, 1, 2, 0x10)), 0x86DD), True, id="v6"
        ),
        pytest.param(
            ether(ipv6("::1", "::1", tcp_header(9, 10, 1, 2, 0x10)), 0x86DD), False, id="v6-other"
        ),
        pytest.param(
            ether(
                ipv4("1.1.1.1", "2.2.2.2", struct.pack("!HH", 8080, 8080) + bytes(4), 17), 0x800
            ),
            False,
            id="udp-same-port",
        ),
        pytest.param(
            ether(ipv4("1.1.1.1", "2.2.2.2", tcp_header(8080, 1, 2, 3, 2), frag=0x0008), 0x800),
            False,
            id="non-first-fragment",
        ),
        pytest.param(ether(bytes(28), 0x0806), False, id="arp"),
    ],
)
def test_filter_keeps_only_tcp_on_wanted_ports(frame: bytes, accepted: bool) -> None:
    assert (run(tcp_ports_program(PORTS), frame) > 0) is accepted


def test_filter_honours_ipv4_options_length() -> None:
    tcp = tcp_header(9, 8080, 1, 2, 0x10)
    header = bytearray(ipv4("1.1.1.1", "2.2.2.2", b""))
    header[0] = 0x46  # IHL 6: 4 bytes of options
    struct.pack_into("!H", header, 2, 24 + len(tcp))
    frame = ether(bytes(header) + bytes(4) + tcp, 0x0800)

    assert run(tcp_ports_program(PORTS), frame) > 0


def test_no_ports_means_every_tcp_segment() -> None:
    program = tcp_ports_program(None)
    assert run(program, v4_frame(tcp_header(1, 2, 3, 4, 0x10))) > 0
    assert run(program, ether(ipv6("::1", "::1", tcp_header(1, 2, 3, 4, 0x10)), 0x86DD)) > 0
    assert run(program, ether(ipv4("1.1.1.1", "2.2.2.2", bytes(8), 17), 0x0800)) == 0


def test_most_ports_still_assemble_with_jumps_in_range() -> None:
    ports = list(range(10000, 10000 + MAX_PORTS))
    program = tcp_ports_program(ports)
    assert all(0 <= i.jt <= 255 and 0 <= i.jf <= 255 for i in program)
    assert run(program, v4_frame(tcp_header(1, ports[-1], 3, 4, 0x10))) > 0
    assert run(program, v4_frame(tcp_header(ports[0], 1, 3, 4, 0x10))) > 0


@pytest.mark.parametrize("ports", [list(range(MAX_PORTS + 1)), [70000]])
def test_unfit_port_sets_are_refused(ports: list[int]) -> None:
    with pytest.raises(ValueError, match="ports"):
        tcp_ports_program(ports)


def test_instruction_packs_as_struct_sock_filter() -> None:
    assert Insn(0x15, 1, 2, 0x0800).pack() == struct.pack("=HBBI", 0x15, 1, 2, 0x0800)
