"""The runner's action table and the lab model's catalogue name the same actions."""

from __future__ import annotations

import pytest

from handshake_lab.agent.protocol import ProtocolError, validate_args
from handshake_lab.lab.runner import ACTIONS_TABLE, LabRun
from handshake_lab.spec.model import ACTIONS, STREAM_ACTIONS


def test_every_action_a_lab_may_name_has_exactly_one_handler() -> None:
    assert set(ACTIONS_TABLE) == set(ACTIONS)


def test_the_stream_actions_share_one_handler_and_are_what_the_agent_accepts() -> None:
    assert {ACTIONS_TABLE[a] for a in STREAM_ACTIONS} == {LabRun._act_stream}
    peer = {"host": "198.18.0.2", "port": 40000}
    for action in STREAM_ACTIONS:
        args = validate_args("stream_action", {"peer": peer, "action": action, "timeout": 1.0})
        assert args["action"] == action
    with pytest.raises(ProtocolError):
        validate_args("stream_action", {"peer": peer, "action": "connect", "timeout": 1.0})
