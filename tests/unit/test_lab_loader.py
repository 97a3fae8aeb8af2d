"""The lab loader turns TOML into frozen records or fails with one line naming file and step."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.errors import ExitStatus, LabInvalidError, LabNotFoundError
from handshake_lab.spec.loader import find_lab, load_lab, parse_lab
from handshake_lab.spec.model import ACTIONS
from handshake_lab.tcp.states import TcpState

HEAD = """
schema = 1
name = "tiny"
title = {en = "Tiny", zh = "小"}
summary = {en = "a tiny lab", zh = "一个小实验"}
"""

LISTEN_STEP = """
[[step]]
id = "listen"
actor = "server"
action = "listen"
expect = {listener = "LISTEN"}
explain = {en = "We listen.", zh = "监听。"}
"""


def parse(text: str) -> object:
    return parse_lab(text.encode(), "tiny.toml")


def error_of(text: str) -> LabInvalidError:
    with pytest.raises(LabInvalidError) as info:
        parse(text)
    return info.value


def test_valid_lab_becomes_frozen_records_with_defaults() -> None:
    lab = parse_lab((HEAD + LISTEN_STEP).encode(), "tiny.toml")
    assert lab.name == "tiny"
    assert lab.clients == ("client",)
    assert lab.ports == ("main",)
    (step,) = lab.steps
    assert step.expect == {"listener": TcpState.LISTEN}
    assert step.args["reuse_address"] is False  # explicit default, unlike asyncio's
    assert step.timeout == 2.0
    assert step.explain.get("zh") == "监听。"


def test_absent_is_expected_as_none() -> None:
    lab = parse_lab(
        (HEAD + LISTEN_STEP.replace('{listener = "LISTEN"}', '{client = "ABSENT"}')).encode(),
        "x.toml",
    )
    assert lab.steps[0].expect == {"client": None}


def test_zh_falls_back_to_english_in_user_labs() -> None:
    lab = parse_lab(
        (HEAD + LISTEN_STEP.replace(', zh = "监听。"', "")).encode(),
        "x.toml",
    )
    assert lab.steps[0].explain.get("zh") == "We listen."


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            HEAD + LISTEN_STEP.replace('"listen"\nexpect', '"lisen"\nexpect'),
            "unknown action 'lisen' (did you mean 'listen'?)",
        ),
        (HEAD + LISTEN_STEP.replace('"LISTEN"', '"LISTENING"'), "unknown state 'LISTENING'"),
        (HEAD + LISTEN_STEP.replace('"LISTEN"', '"SYN_SEND"'), "did you mean 'SYN_SENT'"),
        (
            HEAD + LISTEN_STEP.replace('actor = "server"', 'actor = "sever"'),
            "unknown actor 'sever'",
        ),
        (HEAD + LISTEN_STEP + LISTEN_STEP, "duplicate step id 'listen'"),
        (HEAD + LISTEN_STEP.replace("expect =", "expcet ="), "unknown step key 'expcet'"),
        (HEAD + LISTEN_STEP.replace("listener =", "lstener ="), "unknown side 'lstener'"),
        (HEAD + LISTEN_STEP + 'timeout = "soon"\n', "timeout must be a number"),
        (HEAD + LISTEN_STEP + "timeout = 0\n", "more than 0"),
        (HEAD + LISTEN_STEP + "args = {backlog = -1}\n", "at least 0"),
        (HEAD + LISTEN_STEP + 'args = {backlog = "many"}\n', "must be an integer"),
        (
            HEAD + LISTEN_STEP + 'args = {reuse_address = "yes"}\n',
            "must be one of true, false, 'default'",
        ),
        (HEAD + LISTEN_STEP + "args = {colour = 1}\n", "unknown listen argument key 'colour'"),
        (HEAD + LISTEN_STEP + 'outcome = "EWHATEVER"\n', "unknown outcome 'EWHATEVER'"),
        (HEAD + LISTEN_STEP.replace("explain =", "#"), "missing explain"),
        (HEAD, "at least one [[step]]"),
        (HEAD.replace("schema = 1", "schema = 2") + LISTEN_STEP, "schema 2 is not supported"),
        (HEAD + "colour = 1\n" + LISTEN_STEP, "unknown top-level key 'colour'"),
        (HEAD + 'clients = ["server"]\n' + LISTEN_STEP, "client name 'server' is not allowed"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_lab_is_one_line_error_naming_the_file(text: str, fragment: str) -> None:
    err = error_of(text)
    message = str(err)
    assert fragment in message
    assert message.startswith("tiny.toml")
    assert "\n" not in message
    assert err.exit_status is ExitStatus.LAB_INVALID


def test_step_errors_name_the_step_number_and_id() -> None:
    err = error_of(
        HEAD
        + LISTEN_STEP
        + LISTEN_STEP.replace('id = "listen"', 'id = "two"').replace("LISTEN", "NOPE")
    )
    assert "step 2 (two)" in str(err)


def test_client_cannot_take_conn_and_server_conn_must_name_a_client() -> None:
    client_step = """
[[step]]
actor = "client"
action = "close"
args = {conn = "client"}
explain = {en = "x"}
"""
    assert "only the server takes 'conn'" in str(error_of(HEAD + client_step))
    server_step = client_step.replace('actor = "client"', 'actor = "server"').replace(
        '"client"}', '"ghost"}'
    )
    assert "conn 'ghost' is not one of the lab's clients" in str(error_of(HEAD + server_step))


def test_actor_must_be_allowed_to_take_the_action() -> None:
    step = LISTEN_STEP.replace('actor = "server"', 'actor = "client"')
    assert "client cannot listen" in str(error_of(HEAD + step))


def test_port_slots_come_from_the_steps_and_make_listener_sides() -> None:
    text = (
        HEAD
        + LISTEN_STEP.replace('{listener = "LISTEN"}', '{"listener.alt" = "LISTEN"}')
        + 'args = {port = "alt"}\n'
    )
    lab = parse_lab(text.encode(), "x.toml")
    assert lab.ports == ("main", "alt")
    assert "listener.alt" in lab.sides()


def test_non_utf8_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(LabInvalidError, match="not UTF-8"):
        load_lab(path)


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(LabInvalidError, match="1 MiB at most"):
        load_lab(path)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    deep = HEAD + "x = " + "[" * 5000 + "]" * 5000 + "\n" + LISTEN_STEP
    with pytest.raises(LabInvalidError):
        parse(deep)


def test_missing_file_is_lab_not_found(tmp_path: Path) -> None:
    with pytest.raises(LabNotFoundError, match="no such lab file"):
        find_lab(str(tmp_path / "nope.toml"))


def test_a_path_that_cannot_be_searched_is_lab_invalid_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run /root/x.toml`` as nobody: stat() fails with EACCES (root, running the tests,
    cannot meet that for real). Path.exists() let it through as a traceback (exit 1)."""
    target = tmp_path / "private" / "x.toml"
    real_stat = Path.stat

    def stat(self: Path, **kwargs: bool) -> object:
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(LabInvalidError) as info:
        find_lab(str(target))
    assert str(info.value) == f"{target}: cannot read: Permission denied"
    assert info.value.exit_status is ExitStatus.LAB_INVALID


@pytest.mark.parametrize(
    "key",
    [
        "net.ipv4.../../etc/passwd",
        "net.ipv4.conf/all/x",
        "net.ipv4..x",
        "net.ipv4.",
        "kernel.x",
        "net.ipv4.tcp_tw_reuse\n",
        "net.ipv4.ТСР",
        "net.ipv6.conf.all.x",
    ],
)
def test_a_sysctl_steps_key_is_checked_at_load(key: str) -> None:
    step = (
        '\n[[step]]\nid = "tune"\nactor = "server"\naction = "sysctl"\n'
        f"args = {{key = {key!r}, value = 1}}\n"
        'explain = {en = "x", zh = "x"}\n'
    ).replace("'", '"')
    error = error_of(HEAD + 'topologies = ["netns"]\n' + LISTEN_STEP + step)
    assert error.step == "2 (tune)"
    assert "sysctl key" in error.detail


def test_a_good_sysctl_steps_key_loads() -> None:
    step = (
        '\n[[step]]\nid = "tune"\nactor = "server"\naction = "sysctl"\n'
        'args = {key = "net.ipv4.tcp_tw_reuse", value = 1}\nexplain = {en = "x", zh = "x"}\n'
    )
    lab = parse(HEAD + 'topologies = ["netns"]\n' + LISTEN_STEP + step)
    assert lab.steps[1].args["key"] == "net.ipv4.tcp_tw_reuse"  # type: ignore[attr-defined]


def test_unknown_builtin_name_suggests_close_names() -> None:
    with pytest.raises(LabNotFoundError, match="did you mean half-close"):
        find_lab("half-clos")


def test_every_action_in_the_catalogue_has_help_and_actors() -> None:
    for name, spec in ACTIONS.items():
        assert spec.help, name
        assert spec.actors <= {"server", "client", "lab"}


toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _to_toml_value(value: object) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else "0"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_to_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f'"{k}" = {_to_toml_value(v)}' for k, v in value.items()) + "}"


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                *"abc",
                "id",
                "actor",
                "action",
                "args",
                "expect",
                "outcome",
                "timeout",
                "explain",
                "facts",
                "data",
            ]
        ),
        toml_values,
        max_size=8,
    )
)
def test_fuzzed_steps_only_ever_raise_lab_invalid(step: dict[str, object]) -> None:
    body = "\n".join(f'"{k}" = {_to_toml_value(v)}' for k, v in step.items())
    text = HEAD + "\n[[step]]\n" + body + "\n"
    with contextlib.suppress(LabInvalidError):
        parse(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_bytes_only_ever_raise_lab_invalid(raw: bytes) -> None:
    with contextlib.suppress(LabInvalidError):
        parse_lab(raw, "fuzz.toml")


def test_stay_needs_expectations_and_a_sane_duration() -> None:
    observe = """
[[step]]
action = "observe"
stay = 1.5
expect = {listener = "LISTEN"}
explain = {en = "still listening"}
"""
    lab = parse_lab((HEAD + observe).encode(), "x.toml")
    assert lab.steps[0].stay == 1.5
    assert "stay needs an expect table" in str(
        error_of(HEAD + observe.replace('expect = {listener = "LISTEN"}', ""))
    )
    assert "stay must be a number" in str(error_of(HEAD + observe.replace("1.5", '"long"')))
    assert "between 0 and" in str(error_of(HEAD + observe.replace("1.5", "-1")))


def test_step_that_is_not_an_array_of_tables_says_so() -> None:
    assert "step must be an array of tables" in str(error_of(HEAD + "step = 7\n"))


CONNECT_STEP = """
[[step]]
id = "connect"
actor = "client"
action = "connect"
explain = {en = "We connect.", zh = "连接。"}
"""


def close_both_step(only: str | None) -> str:
    where = f'only = "{only}"\n' if only is not None else ""
    return (
        '\n[[step]]\nid = "both"\nactor = "lab"\naction = "close_both"\n'
        f'{where}explain = {{en = "x", zh = "x"}}\n'
    )


@pytest.mark.parametrize(
    ("topologies", "only"),
    [('["netns"]', None), ('["netns"]', "netns"), ('["netns"]', "netns-agent")],
)
def test_close_both_is_refused_where_an_agent_could_run_the_server(
    topologies: str, only: str | None
) -> None:
    error = error_of(
        HEAD + f"topologies = {topologies}\n" + LISTEN_STEP + CONNECT_STEP + close_both_step(only)
    )
    assert error.step == "3 (both)"
    assert "only = 'netns-local'" in error.detail


@pytest.mark.parametrize(
    ("topologies", "only"), [('["netns"]', "netns-local"), ('["loopback"]', None)]
)
def test_close_both_loads_where_both_ends_are_in_this_process(
    topologies: str, only: str | None
) -> None:
    lab = parse(
        HEAD + f"topologies = {topologies}\n" + LISTEN_STEP + CONNECT_STEP + close_both_step(only)
    )
    assert lab.steps[2].action == "close_both"  # type: ignore[attr-defined]


def test_steps_for_each_step_set_follows_only() -> None:
    steps = "".join(
        f'\n[[step]]\nid = "s-{only}"\naction = "observe"\nonly = "{only}"\n'
        'explain = {en = "x", zh = "x"}\n'
        for only in ("loopback", "netns", "netns-local", "netns-agent")
    )
    lab = parse(HEAD + LISTEN_STEP + steps)
    ids = {s: [st.id for st in lab.steps_for(s)] for s in ("loopback", "netns", "netns-agent")}  # type: ignore[attr-defined]
    assert ids == {
        "loopback": ["listen", "s-loopback"],
        "netns": ["listen", "s-netns", "s-netns-local"],
        "netns-agent": ["listen", "s-netns", "s-netns-agent"],
    }
    with pytest.raises(ValueError, match="unknown step set"):
        lab.steps_for("netns-local")  # type: ignore[attr-defined]


OBSERVE_ONLY = (
    '\n[[step]]\nid = "x"\naction = "observe"\nonly = "{only}"\nexplain = {{en = "x", zh = "x"}}\n'
)


def test_an_unknown_only_value_is_refused_with_a_suggestion() -> None:
    step = OBSERVE_ONLY.format(only="netns_local")
    error = error_of(HEAD + LISTEN_STEP + step)
    assert "did you mean 'netns-local'" in error.detail


def test_a_step_set_only_needs_its_topology_in_the_lab() -> None:
    step = OBSERVE_ONLY.format(only="netns-agent")
    error = error_of(HEAD + 'topologies = ["loopback"]\n' + LISTEN_STEP + step)
    assert "the lab's topologies are ['loopback']" in error.detail
