"""The runner's action table and the lab model's catalogue name the same actions."""

from __future__ import annotations

import pytest

from handshake_lab.agent.protocol import STREAM_ARGS, ProtocolError, validate_args
from handshake_lab.lab.runner import ACTIONS_TABLE, LabRun
from handshake_lab.spec.model import ACTIONS, STREAM_ACTIONS

PEER = {"host": "198.18.0.2", "port": 40000}
# What a stream action carries besides its own arguments: the text it sends, and which
# connection the server acts on (the agent gets the peer's address instead).
CARRIED = {"data", "conn"}


def _required_args(action: str) -> dict[str, object]:
    """The smallest valid arguments of ``action`` as the lab model describes them."""
    out: dict[str, object] = {}
    for name, spec in ACTIONS[action].args.items():
        if name in CARRIED or not spec.required:
            continue
        out[name] = spec.minimum if spec.minimum is not None else spec.types[0]()
    return out


def test_every_action_a_lab_may_name_has_exactly_one_handler() -> None:
    assert set(ACTIONS_TABLE) == set(ACTIONS)


def test_the_stream_actions_share_one_handler_and_are_what_the_agent_accepts() -> None:
    assert {ACTIONS_TABLE[a] for a in STREAM_ACTIONS} == {LabRun._act_stream}
    for action in STREAM_ACTIONS:
        request = {"peer": PEER, "action": action, "timeout": 1.0}
        if _required_args(action):
            request["args"] = _required_args(action)
        args = validate_args("stream_action", request)
        assert args["action"] == action
    with pytest.raises(ProtocolError):
        validate_args("stream_action", {"peer": PEER, "action": "connect", "timeout": 1.0})


@pytest.mark.parametrize("action", STREAM_ACTIONS)
def test_a_stream_actions_arguments_are_the_ones_the_agent_checks(action: str) -> None:
    # The lab model and the agent protocol describe the same arguments, with the same bounds.
    model = {k: v for k, v in ACTIONS[action].args.items() if k not in CARRIED}
    agent = STREAM_ARGS.get(action, {})
    assert set(model) == set(agent)
    for name, spec in model.items():
        if spec.minimum is None or spec.maximum is None:
            continue
        ok = {"peer": PEER, "action": action, "timeout": 1.0}
        base = _required_args(action)
        validate_args("stream_action", {**ok, "args": {**base, name: spec.maximum}})
        for bad in (spec.minimum - 1, spec.maximum + 1, True, "1"):
            with pytest.raises(ProtocolError):
                validate_args("stream_action", {**ok, "args": {**base, name: bad}})


def test_an_action_without_arguments_refuses_any() -> None:
    with pytest.raises(ProtocolError):
        validate_args(
            "stream_action",
            {"peer": PEER, "action": "fill", "timeout": 1.0, "args": {"seconds": 1}},
        )
