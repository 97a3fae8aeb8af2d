"""The wrong-token backoff per address (``agent.server.AuthThrottle``), on a fake clock."""

from __future__ import annotations

from handshake_lab.agent.server import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_wrong_token_doubles_the_wait_up_to_the_cap() -> None:
    throttle = AuthThrottle(0.05, 2.0, 60.0, clock=Clock())
    waits = [throttle.failed("192.0.2.1") for _ in range(8)]
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_addresses_are_counted_apart() -> None:
    throttle = AuthThrottle(0.05, 2.0, 60.0, clock=Clock())
    for _ in range(5):
        throttle.failed("192.0.2.1")
    assert throttle.failed("192.0.2.2") == 0.05
    assert throttle.failures("192.0.2.1") == 5


def test_a_good_token_or_a_quiet_minute_resets_an_address() -> None:
    clock = Clock()
    throttle = AuthThrottle(0.05, 2.0, 60.0, clock=clock)
    for _ in range(4):
        throttle.failed("192.0.2.1")
    throttle.succeeded("192.0.2.1")
    assert throttle.failures("192.0.2.1") == 0
    for _ in range(4):
        throttle.failed("192.0.2.1")
    clock.now += 59.0
    assert throttle.failures("192.0.2.1") == 4
    clock.now += 1.0
    assert throttle.failures("192.0.2.1") == 0
    assert throttle.failed("192.0.2.1") == 0.05


def test_the_table_stays_bounded_dropping_the_stalest() -> None:
    clock = Clock()
    throttle = AuthThrottle(0.05, 2.0, 60.0, clock=clock, max_addresses=3)
    for n in range(1, 6):
        clock.now += 1
        throttle.failed(f"192.0.2.{n}")
    assert len(throttle._failures) == 3
    assert throttle.failures("192.0.2.1") == 0
    assert throttle.failures("192.0.2.5") == 1
