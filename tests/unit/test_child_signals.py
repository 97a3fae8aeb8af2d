"""A child killed by the terminal's signal is an interruption, not a broken tool.

``ss``, ``nft`` and ``ip`` run in the terminal's process group, so Ctrl-C, Ctrl-\\ or a closed
terminal ends them together with the run; the run may hear of it from the child first. Seen
once under load: SIGQUIT at the header of a netns run gave exit 6 "ss failed (exit -3)".
"""

from __future__ import annotations

import signal

import pytest

from handshake_lab.errors import ExitStatus, Interrupted, ObserverError
from handshake_lab.observe.ss import SsObserver
from handshake_lab.signals import TERMINATING, raise_if_interrupted


@pytest.mark.parametrize("sig", [signal.SIGINT, *TERMINATING], ids=lambda s: s.name)
def test_a_child_ended_by_a_terminal_signal_is_an_interruption(sig: signal.Signals) -> None:
    with pytest.raises(Interrupted, match=sig.name) as caught:
        raise_if_interrupted(-sig, "ss")
    assert caught.value.exit_status == ExitStatus.INTERRUPTED


@pytest.mark.parametrize("code", [1, 2, 255, -signal.SIGKILL, -signal.SIGSEGV])
def test_other_failures_are_left_to_the_caller(code: int) -> None:
    raise_if_interrupted(code, "ss")  # nothing raised: the caller reports its own error


def test_ss_killed_by_sigquit_interrupts_and_a_failing_ss_is_an_observer_error() -> None:
    quit_ss = SsObserver(binary="/bin/sh")
    with pytest.raises(Interrupted):
        quit_ss._run(["/bin/sh", "-c", "kill -QUIT $$"])
    with pytest.raises(ObserverError, match="exit 3"):
        quit_ss._run(["/bin/sh", "-c", "echo broken >&2; exit 3"])
