"""FakeObserver: a settable or scripted observer for the runner's unit tests."""

from __future__ import annotations

import pytest

from handshake_lab.errors import ObserverError
from handshake_lab.observe.base import Address, Observer
from handshake_lab.observe.fake import FakeObserver, make_record, parse_address
from handshake_lab.tcp.states import TcpState

LISTEN = make_record("fake", TcpState.LISTEN, "127.0.0.1:8000")
ESTAB = make_record("fake", TcpState.ESTABLISHED, "127.0.0.1:50000", "127.0.0.1:8000")
OTHER = make_record("fake", TcpState.LISTEN, "127.0.0.1:9000")


def test_fake_observer_is_an_observer() -> None:
    assert isinstance(FakeObserver("ss"), Observer)


def test_returns_the_settable_records_filtered_by_port() -> None:
    fake = FakeObserver("ss", [LISTEN, ESTAB, OTHER])
    assert fake.snapshot([8000]) == [LISTEN, ESTAB]
    fake.records = [OTHER]
    assert fake.snapshot() == [OTHER]


def test_plays_a_script_one_snapshot_per_call_and_the_last_one_stays() -> None:
    fake = FakeObserver("ss", script=[[LISTEN], [LISTEN, ESTAB]])
    assert fake.snapshot() == [LISTEN]
    assert fake.snapshot() == [LISTEN, ESTAB]
    assert fake.snapshot() == [LISTEN, ESTAB]


def test_a_scripted_error_is_raised_at_its_call() -> None:
    fake = FakeObserver("ss", [LISTEN])
    fake.push(ObserverError("ss vanished"), [])
    with pytest.raises(ObserverError, match="vanished"):
        fake.snapshot()
    assert fake.snapshot() == []


def test_records_the_ports_of_every_call() -> None:
    fake = FakeObserver()
    fake.snapshot([80, 443])
    fake.snapshot()
    assert fake.calls == [frozenset({80, 443}), None]


def test_make_record_parses_addresses_and_defaults_the_raw_state() -> None:
    record = make_record("psutil", TcpState.TIME_WAIT, "[::ffff:127.0.0.1]:1", "[::1]:2", pid=3)
    assert record.local == Address("127.0.0.1", 1)
    assert record.remote == Address("::1", 2)
    assert (record.raw_state, record.pid, record.source) == ("TIME_WAIT", 3, "psutil")


def test_parse_address_needs_a_port() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("127.0.0.1")
