"""Alias tables: every source's spelling maps to one TcpState; unknown spellings raise."""

from __future__ import annotations

import psutil
import pytest

from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import (
    PROC,
    PSUTIL,
    SS,
    UnknownStateError,
    address,
    from_proc,
    from_psutil,
    from_ss,
    normalise_host,
)
from handshake_lab.observe.base import Address
from handshake_lab.tcp.states import TcpState

SS_SPELLINGS = {
    "ESTAB": TcpState.ESTABLISHED,
    "SYN-SENT": TcpState.SYN_SENT,
    "SYN-RECV": TcpState.SYN_RECV,
    "FIN-WAIT-1": TcpState.FIN_WAIT1,
    "FIN-WAIT-2": TcpState.FIN_WAIT2,
    "TIME-WAIT": TcpState.TIME_WAIT,
    "UNCONN": TcpState.CLOSE,
    "CLOSE-WAIT": TcpState.CLOSE_WAIT,
    "LAST-ACK": TcpState.LAST_ACK,
    "LISTEN": TcpState.LISTEN,
    "CLOSING": TcpState.CLOSING,
}

PROC_SPELLINGS = {
    "01": TcpState.ESTABLISHED,
    "02": TcpState.SYN_SENT,
    "03": TcpState.SYN_RECV,
    "04": TcpState.FIN_WAIT1,
    "05": TcpState.FIN_WAIT2,
    "06": TcpState.TIME_WAIT,
    "07": TcpState.CLOSE,
    "08": TcpState.CLOSE_WAIT,
    "09": TcpState.LAST_ACK,
    "0A": TcpState.LISTEN,
    "0B": TcpState.CLOSING,
    "0C": TcpState.NEW_SYN_RECV,
}

PSUTIL_TCP_CONSTANTS = [
    psutil.CONN_ESTABLISHED,
    psutil.CONN_SYN_SENT,
    psutil.CONN_SYN_RECV,
    psutil.CONN_FIN_WAIT1,
    psutil.CONN_FIN_WAIT2,
    psutil.CONN_TIME_WAIT,
    psutil.CONN_CLOSE,
    psutil.CONN_CLOSE_WAIT,
    psutil.CONN_LAST_ACK,
    psutil.CONN_LISTEN,
    psutil.CONN_CLOSING,
]


@pytest.mark.parametrize(("spelling", "state"), SS_SPELLINGS.items())
def test_every_ss_spelling_maps_to_its_linux_state(spelling: str, state: TcpState) -> None:
    assert from_ss(spelling) is state


def test_ss_table_has_exactly_the_spellings_ss_prints() -> None:
    assert dict(SS) == SS_SPELLINGS


@pytest.mark.parametrize("constant", PSUTIL_TCP_CONSTANTS)
def test_every_psutil_tcp_constant_maps_to_the_state_of_the_same_name(constant: str) -> None:
    assert from_psutil(str(constant)) is TcpState[str(constant)]


def test_psutil_table_covers_every_psutil_constant_except_none() -> None:
    constants = {str(getattr(psutil, name)) for name in dir(psutil) if name.startswith("CONN_")}
    assert set(PSUTIL) == constants - {"NONE"}


@pytest.mark.parametrize(("spelling", "state"), PROC_SPELLINGS.items())
def test_every_proc_hex_code_maps_to_its_tcp_states_h_value(
    spelling: str, state: TcpState
) -> None:
    assert from_proc(spelling) is state


def test_proc_table_has_one_code_per_state() -> None:
    assert dict(PROC) == PROC_SPELLINGS


def test_psutil_none_raises_instead_of_becoming_none() -> None:
    with pytest.raises(UnknownStateError, match=r"psutil .*'NONE'"):
        from_psutil("NONE")


@pytest.mark.parametrize(
    ("source", "spelling"),
    [
        ("ss", "UNKNOWN"),
        ("ss", "NEW-SYN-RECV"),
        ("ss", "ESTABLISHED"),
        ("ss", "estab"),
        ("ss", ""),
        ("psutil", "FIN-WAIT-2"),
        ("psutil", "established"),
        ("proc", "00"),
        ("proc", "0a"),
        ("proc", "0D"),
        ("proc", "1"),
    ],
)
def test_unknown_spelling_raises_naming_source_and_spelling(source: str, spelling: str) -> None:
    with pytest.raises(UnknownStateError) as caught:
        _lookup(source, spelling)
    assert caught.value.source == source
    assert caught.value.spelling == spelling
    assert source in str(caught.value)
    assert repr(spelling) in str(caught.value)


def _lookup(source: str, spelling: str) -> TcpState:
    return {"ss": from_ss, "psutil": from_psutil, "proc": from_proc}[source](spelling)


def test_unknown_state_error_is_an_observer_error() -> None:
    assert issubclass(UnknownStateError, ObserverError)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::FFFF:7f00:1", "127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("::", "::"),
        ("fe80::0001", "fe80::1"),
    ],
)
def test_hosts_are_normalised_so_sources_agree(host: str, expected: str) -> None:
    assert normalise_host(host) == expected


def test_address_rejects_a_port_out_of_range() -> None:
    with pytest.raises(ValueError, match="65536"):
        address("127.0.0.1", 65536)


def test_address_builds_a_normalised_address() -> None:
    assert address("::ffff:10.0.0.1", 80) == Address("10.0.0.1", 80)
