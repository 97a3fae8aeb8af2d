"""``play``'s pure parts: the command parser, tab completion, and the RFC model's two-end
prediction, driven by play scripts through the textbook paths of ``tcp.machine``."""

from __future__ import annotations

import tomllib
import unicodedata

import pytest

from handshake_lab.i18n.play import play_text
from handshake_lab.lab.play import (
    COMMANDS,
    Command,
    Control,
    PlayError,
    PlayModel,
    completions,
    controls,
    hold_kinds_listing,
    parse_command,
    toml_value,
)
from handshake_lab.lab.predict import Prediction, from_kernel, predict
from handshake_lab.placement import Topology
from handshake_lab.spec.model import HOLD_KINDS
from handshake_lab.tcp.machine import paths
from handshake_lab.tcp.states import TcpState

S = TcpState

# -- the parser -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "actor", "action", "args"),
    [
        ("connect", "client", "connect", {}),
        ("connect client", "client", "connect", {}),
        ("send client hello world", "client", "send", {"data": "hello world"}),
        ("send server  two  spaces", "server", "send", {"data": "two  spaces"}),
        ("recv server", "server", "recv", {}),
        ("shutdown client", "client", "send_eof", {}),
        ("shutdown server wr", "server", "send_eof", {}),
        ("close client", "client", "close", {}),
        ("close listener", "server", "unlisten", {}),
        ("abort server", "server", "abort", {}),
        ("listen", "server", "listen", {"accept": True}),
        ("listen noaccept", "server", "listen", {"accept": False}),
        ("unlisten", "server", "unlisten", {}),
        ("accept", "server", "accept", {}),
        ("wait", "lab", "observe", {}),
    ],
)
def test_each_action_command_becomes_its_lab_action(
    line: str, actor: str, action: str, args: dict[str, object]
) -> None:
    command = parse_command(line)
    assert command is not None
    assert (command.actor, command.action, dict(command.args)) == (actor, action, args)
    assert command.line == line


def test_drop_next_maps_onto_a_counted_hold_where_the_segment_arrives() -> None:
    expected = {
        "drop next fin from client": ("drop_fin", "server", 1),
        "drop next fin from server": ("drop_fin", "client", 1),
        "drop next ack from server": ("drop_pure_ack", "client", 1),
        "drop next synack from server": ("drop_synack", "client", 1),
        "drop next syn from client": ("drop_syn", "server", 1),
    }
    for line, hold in expected.items():
        command = parse_command(line)
        assert command is not None
        assert command.hold == hold, line
        assert command.action == "observe"


def test_hold_takes_every_hold_kind_until_released() -> None:
    for kind in HOLD_KINDS:
        command = parse_command(f"hold {kind} at client")
        assert command is not None
        assert command.hold == (kind, "client", None)
    release = parse_command("release h2")
    assert release is not None
    assert release.release == "h2"


def test_meta_commands_blank_lines_and_comments() -> None:
    assert parse_command("") is None
    assert parse_command("   # a comment") is None
    for verb in ("help", "history", "quit"):
        command = parse_command(verb)
        assert command is not None
        assert command.verb == verb
        assert command.action is None
    assert parse_command("exit") == Command("quit", "exit")
    save = parse_command("save my-lab.toml")
    assert save is not None
    assert save.path == "my-lab.toml"
    wait = parse_command("wait 2.5")
    assert wait is not None
    assert wait.wait == 2.5


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("frobnicate", "commands: connect, send"),
        ("send", "client|server"),
        ("send client", "send client|server TEXT"),
        ("send listener hi", "ends: client, server"),
        ("recv nobody", "ends: client, server"),
        ("close", "client|server|listener"),
        ("shutdown client rd", "(SHUT_RD) is not supported"),
        ("drop next rst from client", "fin|ack|synack|syn"),
        ("drop next synack from client", "only the server sends one"),
        ("hold drop_everything at client", "kinds: drop_syn"),
        ("save lab.json", "FILE.toml"),
        ("wait forever", "not a number"),
        ("wait 0", "between 0 and 60"),
        ("listen now", "listen [noaccept]"),
        ("help me", "unexpected"),
    ],
)
def test_a_bad_command_is_one_line_that_names_what_is_valid(line: str, names: str) -> None:
    with pytest.raises(PlayError) as caught:
        parse_command(line)
    message = str(caught.value)
    assert "\n" not in message
    assert names in message


def test_completion_offers_commands_then_ends() -> None:
    assert completions("", []) == list(COMMANDS)
    assert completions("s", []) == ["send", "shutdown", "save"]
    assert completions("", ["send"]) == ["client", "server"]
    assert completions("l", ["close"]) == ["listener"]
    assert completions("", ["drop", "next"]) == ["fin", "ack", "synack", "syn"]
    assert completions("hold_", ["hold"]) == ["hold_fin"]
    assert completions("", ["send", "client"]) == []


# -- the model --------------------------------------------------------------------------------


def play_script(*lines: str) -> tuple[PlayModel, list[Prediction]]:
    """Run a play script through the model alone: each prediction is taken as what the
    kernel showed (the session feeds the kernel's states back the same way)."""
    model = PlayModel()
    out: list[Prediction] = []
    for line in lines:
        command = parse_command(line)
        assert command is not None
        prediction, _, _ = model.plan(command)
        out.append(prediction)
        if prediction.known:
            dropped = {
                hold_id: (model.counts[hold_id] or 0) - (left or 0)
                for hold_id, left in prediction.left.items()
                if model.counts.get(hold_id) is not None
            }
            model.learn(prediction.after, dropped)
    return model, out


def states_of(predictions: list[Prediction], end: str) -> list[TcpState]:
    """Every state ``end`` passed through, in order, repeated states once."""
    seen: list[TcpState] = []
    for prediction in predictions:
        for move in prediction.moves:
            if move.end != end:
                continue
            for state in (move.before, move.after):
                if not seen or seen[-1] is not state:
                    seen.append(state)
    return seen


def test_handshake_both_ends_follow_the_textbook() -> None:
    _, predictions = play_script("listen", "connect")
    assert states_of(predictions, "client") == list(paths["handshake_client"].states)
    # The server's end is born from the listener (LISTEN), as the RFC's passive open.
    assert states_of(predictions, "server") == list(paths["handshake_server"].states[1:])
    assert predictions[-1].expect() == {
        "listener": S.LISTEN,
        "client": S.ESTABLISHED,
        "server": S.ESTABLISHED,
    }


def test_close_client_first_is_the_active_and_passive_close() -> None:
    _, predictions = play_script("listen", "connect", "close client", "close server")
    client = states_of(predictions, "client")
    server = states_of(predictions, "server")
    assert client[-4:] == list(paths["active_close"].states[:-1])  # TIME_WAIT: no clock
    assert server[-4:] == list(paths["passive_close"].states)
    assert predictions[-1].expect() == {
        "listener": S.LISTEN,
        "client": S.TIME_WAIT,
        "server": None,
    }


def test_half_close_both_directions() -> None:
    model, predictions = play_script(
        "listen",
        "connect",
        "send client hello",
        "shutdown client",
        "recv server",
        "send server data after FIN",
        "recv client",
        "shutdown server",
        "close client",
        "close server",
    )
    assert predictions[3].expect()["client"] is S.FIN_WAIT2
    assert predictions[3].expect()["server"] is S.CLOSE_WAIT
    assert all(not p.moves for p in predictions[4:7])  # data and reads change no state
    events = [m.event for p in predictions for m in p.moves if m.end == "client"]
    assert events[-4:] == list(paths["half_close"].events[:-1])
    assert model.states["client"] is S.TIME_WAIT
    assert model.states["server"] is S.CLOSE


def test_abort_and_connection_refused_are_resets() -> None:
    _, predictions = play_script("listen", "connect", "abort client")
    assert [m.event for m in predictions[-1].moves if m.end == "client"] == list(
        paths["abort"].events
    )
    assert [m.event for m in predictions[-1].moves if m.end == "server"] == list(
        paths["reset"].events
    )
    _, refused = play_script("unlisten", "connect")
    assert states_of(refused, "client") == list(paths["connection_refused"].states)
    assert refused[-1].expect()["client"] is None


def test_a_dropped_ack_makes_the_fin_carry_it_fin_wait1_straight_to_time_wait() -> None:
    _, predictions = play_script(
        "listen", "connect", "hold drop_pure_ack at client", "close client", "close server"
    )
    assert predictions[3].expect()["client"] is S.FIN_WAIT1
    assert [d.hold for d in predictions[3].drops] == ["h1"]
    client = [m for m in predictions[4].moves if m.end == "client"]
    assert [(m.before, m.after) for m in client] == [(S.FIN_WAIT1, S.TIME_WAIT)]
    assert list(paths["active_close_fin_with_ack"].states[1:3]) == [S.FIN_WAIT1, S.TIME_WAIT]


def test_crossing_fins_pass_closing_until_a_timer_must_decide() -> None:
    _, predictions = play_script(
        "listen", "connect", "hold hold_fin at server", "close client", "close server"
    )
    assert states_of(predictions, "client")[-3:] == list(paths["simultaneous_close"].states[:3])
    assert predictions[-1].expect()["client"] is S.CLOSING
    # The held FIN is resent by a timer once released: the model says it cannot tell when.
    _, released = play_script(
        "listen", "connect", "hold hold_fin at server", "close client", "release h1"
    )
    assert not released[-1].known
    assert released[-1].unknown == ("client", "FIN+ACK")
    assert released[-1].expect() == {}


def test_a_counted_drop_leaves_a_retransmission_the_model_cannot_time() -> None:
    _, predictions = play_script(
        "listen", "connect", "drop next fin from client", "shutdown client", "recv server"
    )
    assert predictions[3].expect()["client"] is S.FIN_WAIT1
    assert predictions[3].expect()["server"] is S.ESTABLISHED
    assert predictions[3].left == {"h1": 0}
    assert not predictions[4].known


def test_a_held_synack_keeps_both_ends_half_open() -> None:
    _, predictions = play_script("listen", "hold drop_synack at client", "connect")
    assert predictions[-1].expect()["client"] is S.SYN_SENT
    assert predictions[-1].expect()["server"] is S.SYN_RECV


def test_illegal_calls_change_nothing_and_are_reported() -> None:
    _, predictions = play_script("listen", "listen")
    assert predictions[-1].after == predictions[-1].before
    assert [(i.end, i.state) for i in predictions[-1].illegal] == [("listener", S.LISTEN)]


def test_paths_a_play_session_cannot_drive_are_the_ones_without_a_command() -> None:
    """Simultaneous open (a self-connect or crossed SYNs), an old duplicate SYN (a raw
    segment) and a lost last ACK (a resent FIN: a timer) have no play command; every other
    textbook path is covered above."""
    covered = {
        "handshake_client",
        "handshake_server",
        "active_close",
        "active_close_fin_with_ack",
        "passive_close",
        "simultaneous_close",
        "half_close",
        "half_close_peer",
        "reset",
        "abort",
        "connection_refused",
    }
    assert set(paths) - covered == {"simultaneous_open", "old_duplicate_syn", "lost_last_ack"}


def test_half_close_peer_path() -> None:
    _, predictions = play_script("listen", "connect", "shutdown server", "shutdown client")
    events = [m.event for p in predictions[2:] for m in p.moves if m.end == "client"]
    assert events == list(paths["half_close_peer"].events[:3])


def test_kernel_states_map_onto_the_model() -> None:
    assert from_kernel("ABSENT") is S.CLOSE
    assert from_kernel(None) is S.CLOSE
    assert from_kernel("NEW_SYN_RECV") is S.SYN_RECV
    assert from_kernel("TIME_WAIT") is S.TIME_WAIT


def test_predict_is_pure() -> None:
    states = {"listener": S.LISTEN, "client": S.ESTABLISHED, "server": S.ESTABLISHED}
    before = dict(states)
    first = predict(states, "close", "client")
    assert states == before
    assert predict(states, "close", "client") == first


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_help_fits_80_columns_and_says_there_is_no_undo(lang: str) -> None:
    text = play_text("help", lang, kinds=hold_kinds_listing())
    for line in text.splitlines():
        width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)
        assert width < 80, line
    assert ("no undo" if lang == "en" else "没有撤销") in text
    for verb in COMMANDS:
        assert verb in text


@pytest.mark.parametrize(
    "value",
    [
        'say "hi"',
        "back\\slash",
        "tab\there",
        "中文 数据",
        "del\x7fbell\x07",
        "{not a table}",
        3,
        2.5,
        True,
    ],
)
def test_saved_values_are_toml_that_reads_back_the_same(value: object) -> None:
    assert tomllib.loads(f"x = {toml_value(value)}")["x"] == value


# -- the browser's panel ----------------------------------------------------------------------


def _panel(
    lines: list[str],
    topology: Topology = Topology.LOOPBACK,
    lang: str = "en",
    holds: tuple[str, ...] = (),
    **states: TcpState,
) -> dict[str, Control]:
    """The panel after ``lines`` ran (play's opening listen first), with the kernel's states."""
    commands = [parse_command(line) for line in ["listen", *lines]]
    now = dict.fromkeys(("listener", "client", "server"), S.CLOSE) | {"listener": S.LISTEN}
    now |= states
    got = controls(
        now,
        [c for c in commands if c is not None],
        topology=topology,
        lang=lang,
        holds=holds,
        server_seen=now["server"] is not S.CLOSE or "connect" in lines,
    )
    return {c.command: c for c in got}


def test_before_connect_only_what_can_start_a_connection_is_offered() -> None:
    panel = _panel([])
    assert panel["connect"].enabled
    assert panel["close listener"].enabled
    for command in ("send client", "recv server", "shutdown client", "close server"):
        assert not panel[command].enabled
        assert "connect first" in panel[command].reason
    assert panel["listen"].reason == (
        "listener is LISTEN: the RFC table has no transition for PASSIVE_OPEN there"
    )
    assert "--topology netns" in panel["drop next fin from client"].reason
    assert panel["accept"].reason == "the listener accepts already"
    assert panel["quit"].enabled
    assert panel["wait 1"].enabled


def test_established_ends_offer_data_and_closes_and_one_connection_a_session() -> None:
    panel = _panel(["connect"], client=S.ESTABLISHED, server=S.ESTABLISHED)
    for end in ("client", "server"):
        for verb in ("send", "recv", "shutdown", "close", "abort"):
            assert panel[f"{verb} {end}"].enabled, verb
    assert panel["send client"].text
    assert "one connection a session" in panel["connect"].reason


def test_half_close_disables_what_the_rfc_table_forbids() -> None:
    panel = _panel(["connect", "shutdown client"], client=S.FIN_WAIT2, server=S.CLOSE_WAIT)
    assert panel["send client"].reason == (
        "client is FIN_WAIT2: data goes out only in ESTABLISHED or CLOSE_WAIT"
    )
    assert panel["shutdown client"].reason == (
        "client is FIN_WAIT2: the RFC table has no transition for SEND_EOF there"
    )
    assert panel["recv client"].enabled
    assert panel["close client"].enabled
    assert panel["send server"].enabled
    assert panel["shutdown server"].enabled
    # After the application closed an end, nothing is left to do with it, TIME_WAIT or not.
    closed = _panel(
        ["connect", "shutdown client", "close server", "close client"], client=S.TIME_WAIT
    )
    for verb in ("send", "recv", "close", "abort"):
        assert "closed by the application" in closed[f"{verb} client"].reason
        assert "closed by the application" in closed[f"{verb} server"].reason


def test_listener_buttons_follow_listen_noaccept_and_unlisten() -> None:
    gone = _panel(["unlisten"], listener=S.CLOSE)
    assert gone["listen"].enabled
    assert gone["listen noaccept"].enabled
    assert gone["accept"].reason == "the listener is not listening: listen first"
    assert not gone["close listener"].enabled
    waiting = _panel(["unlisten", "listen noaccept"])
    assert waiting["accept"].enabled


def test_holds_in_netns_offer_only_segments_still_to_come() -> None:
    before = _panel([], Topology.NETNS)
    for line in ("drop next syn from client", "drop next synack from server"):
        assert before[line].enabled
    assert before["drop next fin from server"].enabled
    after = _panel(
        ["connect", "shutdown client"],
        Topology.NETNS,
        holds=("h1",),
        client=S.FIN_WAIT2,
        server=S.CLOSE_WAIT,
    )
    assert after["drop next syn from client"].reason == "the handshake is over: no SYN is coming"
    assert after["drop next fin from client"].reason == (
        "client is FIN_WAIT2: it sends no FIN from here"
    )
    assert after["drop next fin from server"].enabled  # CLOSE_WAIT still sends its FIN
    assert after["release h1"].enabled
    held = _panel(["drop next synack from server", "connect"], Topology.NETNS, client=S.SYN_SENT)
    assert held["drop next syn from client"].enabled  # retransmitted until the handshake ends
    assert held["drop next synack from server"].enabled


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_disabled_button_gives_its_reason_in_the_language(lang: str) -> None:
    reasons = [
        c.reason
        for panel in (
            _panel([], lang=lang),
            _panel(["connect", "shutdown client"], Topology.NETNS, lang, client=S.FIN_WAIT2),
            _panel(["unlisten"], lang=lang, listener=S.CLOSE),
        )
        for c in panel.values()
        if not c.enabled
    ]
    assert len(reasons) > 10
    for reason in reasons:
        has_cjk = any("\u4e00" <= ch <= "\u9fff" for ch in reason)
        assert has_cjk == (lang == "zh"), reason
