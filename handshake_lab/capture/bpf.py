"""A classic BPF program "TCP to or from one of these ports" for Ethernet-framed AF_PACKET sockets.

Attached with SO_ATTACH_FILTER, it makes the kernel drop every other frame before it is copied
to user space: on a busy host the sniffer then wakes only for the lab's segments. It is an
optimisation only; the sniffer filters again in user space, so a filter that is not attached
(raw-IP links, too many ports, an old kernel) changes cost, never results.

The program is the hand-assembled equivalent of ``tcpdump -dd 'tcp port P or tcp port Q'``
for IPv4 and for IPv6 *without* extension headers (the lab never sends any; an IPv6 segment
behind an extension header would be dropped by this filter). Frames are Ethernet-framed, which
includes ``lo`` (its frames carry a zeroed Ethernet header). Pure: building the program needs
no socket, and the unit tests run it in a small interpreter.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_PORTS", "SO_ATTACH_FILTER", "Insn", "attach_filter", "tcp_ports_program"]

SO_ATTACH_FILTER: Final = 26  # <asm-generic/socket.h>; not exported by Python's socket module
MAX_PORTS: Final = 40  # jump offsets are 8-bit: keep every branch in range

# Opcode parts from <linux/filter.h> / <linux/bpf_common.h>.
BPF_LD: Final = 0x00
BPF_LDX: Final = 0x01
BPF_JMP: Final = 0x05
BPF_RET: Final = 0x06
BPF_W: Final = 0x00
BPF_H: Final = 0x08
BPF_B: Final = 0x10
BPF_ABS: Final = 0x20
BPF_IND: Final = 0x40
BPF_MSH: Final = 0xA0
BPF_JEQ: Final = 0x10
BPF_JSET: Final = 0x40
BPF_JA: Final = 0x00
BPF_K: Final = 0x00

_ACCEPT_LEN: Final = 0x40000  # return value = bytes to keep: the whole frame


@dataclass(frozen=True, slots=True)
class Insn:
    """One ``struct sock_filter``: opcode, jump-if-true, jump-if-false, constant."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k)


# Symbolic program: an instruction's jt/jf are label names or 0 (fall through).
_Sym = tuple[int, str | int, str | int, int | str]
"""(code, jt, jf, k); for an unconditional jump k is the target label."""


def _port_checks(ports: list[int]) -> list[_Sym]:
    return [(BPF_JMP | BPF_JEQ | BPF_K, "accept", 0, port) for port in ports]


def tcp_ports_program(ports: Iterable[int] | None) -> list[Insn]:
    """Assemble the filter; ``None`` or empty means "every TCP segment".

    Raises ``ValueError`` for a port outside 0..65535 or more than :data:`MAX_PORTS` ports.
    """
    wanted = sorted(set(ports or ()))
    if any(not 0 <= p <= 0xFFFF for p in wanted):
        raise ValueError(f"TCP ports must be in 0..65535, got {wanted}")
    if len(wanted) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports fit a classic BPF filter, got {len(wanted)}")
    ld_h = BPF_LD | BPF_H | BPF_ABS
    ld_b = BPF_LD | BPF_B | BPF_ABS
    ld_h_ind = BPF_LD | BPF_H | BPF_IND
    jeq = BPF_JMP | BPF_JEQ | BPF_K
    jump_always = BPF_JMP | BPF_JA
    sym: list[_Sym | str] = [
        (ld_h, 0, 0, 12),  # EtherType
        (jeq, "ipv6", 0, 0x86DD),
        (jeq, 0, "reject", 0x0800),
        (ld_b, 0, 0, 23),  # IPv4 protocol
        (jeq, 0, "reject", 6),
        (ld_h, 0, 0, 20),  # flags + fragment offset
        (BPF_JMP | BPF_JSET | BPF_K, "reject", 0, 0x1FFF),  # non-first fragment: no TCP header
        (BPF_LDX | BPF_B | BPF_MSH, 0, 0, 14),  # X = IPv4 header length
    ]
    if wanted:
        sym += [(ld_h_ind, 0, 0, 14), *_port_checks(wanted)]  # source port
        sym += [(ld_h_ind, 0, 0, 16), *_port_checks(wanted)]  # destination port
        sym += [(jump_always, 0, 0, "reject")]
    else:
        sym += [(jump_always, 0, 0, "accept")]
    sym += [
        "ipv6",
        (ld_b, 0, 0, 20),  # IPv6 next header
        (jeq, 0, "reject", 6),
    ]
    if wanted:
        sym += [(ld_h, 0, 0, 54), *_port_checks(wanted)]
        sym += [(ld_h, 0, 0, 56), *_port_checks(wanted)]
        sym += [(jump_always, 0, 0, "reject")]
    sym += ["accept", (BPF_RET | BPF_K, 0, 0, _ACCEPT_LEN), "reject", (BPF_RET | BPF_K, 0, 0, 0)]
    return _assemble(sym)


def _assemble(sym: list[_Sym | str]) -> list[Insn]:
    labels: dict[str, int] = {}
    body: list[_Sym] = []
    for item in sym:
        if isinstance(item, str):
            labels[item] = len(body)
        else:
            body.append(item)
    out: list[Insn] = []
    for index, (code, jt, jf, k) in enumerate(body):

        def rel(target: str | int, index: int = index) -> int:
            if isinstance(target, int):
                return target
            offset = labels[target] - index - 1
            if not 0 <= offset <= 0xFF:
                raise ValueError(f"BPF jump to {target!r} out of range ({offset})")
            return offset

        if code == BPF_JMP | BPF_JA:
            # An unconditional jump keeps its (32-bit) offset in k.
            out.append(Insn(code, 0, 0, labels[str(k)] - index - 1))
        else:
            out.append(Insn(code, rel(jt), rel(jf), int(k)))
    return out


def attach_filter(sock: socket.socket, program: list[Insn]) -> None:
    """Attach ``program`` with SO_ATTACH_FILTER; OSError propagates to the caller."""
    code = b"".join(insn.pack() for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } - native layout,
    # so "@HP" gives the padding before the pointer. The kernel copies the program at once.
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
