"""The built-in labs: they load, they are bilingual, and they correct the seed notes.

The seed document (Chinese study notes) made a few mistakes; NOTES.md lists them. Each check
below pins one correction: the wrong claim must not come back into a lab, and the right one must
be there.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

from handshake_lab.spec.loader import load_lab, parse_lab
from handshake_lab.spec.model import Lab, Step
from handshake_lab.tcp.states import TcpState

LAB_DIR = Path(__file__).resolve().parents[2] / "labs"
LAB_FILES = sorted(LAB_DIR.glob("*.toml"))
EXPECTED_LABS = {
    "handshake",
    "half-close",
    "close",
    "port-reuse",
    "close-wait-leak",
    "reset",
    "lost-last-ack",
    "simultaneous-close",
    "simultaneous-open",
    "stale-syn",
    "port-exhaustion",
    "syn-backlog",
    "unread-close",
    "orphaned-fin-wait2",
    "linger",
    "keepalive",
    "syn-flood",
    "dual-stack",
    "rst-validation",
    "time-wait-syn",
}
# Labs whose lesson needs nftables holds, raw SYNs or namespace sysctls (root).
NETNS_ONLY_LABS = {
    "lost-last-ack",
    "simultaneous-close",
    "stale-syn",
    "port-exhaustion",
    "orphaned-fin-wait2",
    "keepalive",
    "syn-flood",
    "rst-validation",
}
CJK = re.compile(r"[\u4e00-\u9fff]")
# States that last microseconds on loopback: a poll cannot be expected to catch them.
UNCATCHABLE = {TcpState.SYN_RECV, TcpState.NEW_SYN_RECV, TcpState.LAST_ACK, TcpState.CLOSING}


@cache
def lab(name: str) -> Lab:
    return load_lab(LAB_DIR / f"{name}.toml")


def texts(name: str, lang: str) -> str:
    """Every text of a lab in one language, whitespace folded, for phrase searches."""
    item = lab(name)
    parts = [item.title.get(lang), item.summary.get(lang)]
    if item.intro is not None:
        parts.append(item.intro.get(lang))
    parts += [s.explain.get(lang) for s in item.steps]
    return " ".join(" ".join(parts).split())


def all_texts(lang: str) -> str:
    return " ".join(texts(name, lang) for name in sorted(EXPECTED_LABS))


def step(name: str, sid: str) -> Step:
    for s in lab(name).steps:
        if s.id == sid:
            return s
    raise AssertionError(f"{name} has no step {sid}")


def en(name: str, sid: str) -> str:
    """A step's English explanation with its line breaks folded into spaces."""
    return " ".join(step(name, sid).explain.en.split())


def zh(name: str, sid: str) -> str:
    return step(name, sid).explain.zh


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_the_built_in_labs_exist() -> None:
    assert {p.stem for p in LAB_FILES} == EXPECTED_LABS


def runs_on_loopback(loaded: Lab, s: Step) -> bool:
    return "loopback" in loaded.topologies and s.only in (None, "loopback")


@pytest.mark.parametrize("name", sorted(EXPECTED_LABS))
def test_labs_that_need_namespaces_say_so(name: str) -> None:
    loaded = lab(name)
    if name in NETNS_ONLY_LABS:
        assert loaded.topologies == ("netns",)
    else:
        assert "loopback" in loaded.topologies
        assert loaded.steps_for("loopback"), name


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_lab_loads_and_is_named_after_its_file(path: Path) -> None:
    loaded = load_lab(path)
    assert loaded.name == path.stem
    assert loaded.steps


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_lab_texts_are_bilingual(path: Path) -> None:
    loaded = load_lab(path)
    headers = [loaded.title, loaded.summary] + ([loaded.intro] if loaded.intro else [])
    for text in headers:
        assert text.en
        assert text.zh
        assert text.en != text.zh
        assert CJK.search(text.zh), text.zh
    for s in loaded.steps:
        assert s.explain.en, s.id
        assert s.explain.zh, s.id
        assert s.explain.en != s.explain.zh, s.id
        assert CJK.search(s.explain.zh), s.id
        assert not CJK.search(s.explain.en), s.id


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_summaries_fit_the_list_view(path: Path) -> None:
    loaded = load_lab(path)
    # `list` prints names in a field as wide as the longest name plus two spaces; the summary
    # gets the rest of 80 columns (display columns: a Chinese character takes two).
    room = 80 - (max(len(p.stem) for p in LAB_FILES) + 2)
    assert width(loaded.summary.en) <= room
    assert width(loaded.summary.zh) <= room


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_explanations_are_concise(path: Path) -> None:
    for s in load_lab(path).steps:
        n_en = len(re.findall(r"[.!?](?=\s|$)", " ".join(s.explain.en.split())))
        n_zh = len(re.findall(r"[。！？]", s.explain.zh))
        assert 2 <= n_en <= 5, (s.id, n_en)
        assert 2 <= n_zh <= 5, (s.id, n_zh)


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_chinese_text_has_no_line_breaks_inside_sentences(path: Path) -> None:
    # A renderer that unwraps lines with spaces would put stray spaces into Chinese text.
    for s in load_lab(path).steps:
        assert "\n" not in s.explain.zh, s.id


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_no_step_expects_a_state_loopback_cannot_hold(path: Path) -> None:
    # Steps that run only in namespaces hold such states with nftables (and prove the drop).
    loaded = load_lab(path)
    for s in loaded.steps:
        if not runs_on_loopback(loaded, s):
            continue
        for side, state in s.expect.items():
            assert state not in UNCATCHABLE, (s.id, side, state)


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_exercise_sheet_exists(path: Path) -> None:
    sheet = path.with_suffix(".md")
    assert sheet.is_file(), f"missing exercise sheet {sheet.name}"
    body = sheet.read_text(encoding="utf-8")
    assert f"handshake-lab run {path.stem}" in body
    assert "--lang zh" in body
    assert CJK.search(body)
    # English first, then Chinese.
    first_cjk = CJK.search(body)
    assert first_cjk is not None
    assert body.find("Predict") < first_cjk.start()


# --- the seed's errors, one check each ---------------------------------------------------


def test_state_names_are_spelled_the_linux_way() -> None:
    for lang in ("en", "zh"):
        text = all_texts(lang)
        assert not re.search(r"SYN_SEND\b|SYN-SEND\b|SYN_RECVD|SYN-RECVD", text)
    assert "SYN_SENT" in texts("handshake", "en")
    assert "SYN_RECV" in texts("handshake", "en")


def test_third_handshake_segment_is_an_ack_not_a_syn() -> None:
    for lang in ("en", "zh"):
        assert "SYN(ack" not in all_texts(lang).replace(" ", "")
    assert "The third segment is a plain ACK with ack=k+1" in texts("handshake", "en")
    assert "no longer set" in en("handshake", "accept")
    assert "第三个报文段是一个普通的 ACK，ack=k+1" in texts("handshake", "zh")


def test_j_is_a_sequence_number_not_the_syn_flag() -> None:
    for lang in ("en", "zh"):
        assert "SYN=j" not in all_texts(lang).replace(" ", "")
    explain_en, explain_zh = en("handshake", "syn-dropped"), zh("handshake", "syn-dropped")
    assert "seq=j" in explain_en
    assert "not the value of the SYN flag" in explain_en
    assert "不是 SYN 标志位的取值" in explain_zh
    assert "ack=j+1" in en("handshake", "accept")
    assert "one sequence number" in en("handshake", "accept")


def test_client_is_established_before_the_server() -> None:
    explain_en = en("handshake", "who-is-first")
    assert "second segment" in explain_en
    assert "SYN_RECV until the third segment" in explain_en
    assert "netns" in explain_en


def test_why_three_way_names_the_old_duplicate_syn() -> None:
    explain_en, explain_zh = en("handshake", "why-three"), zh("handshake", "why-three")
    assert "old duplicate SYN" in explain_en
    assert "RST" in explain_en
    assert "旧 SYN" in explain_zh


def test_fourth_teardown_segment_sets_ack_not_seq() -> None:
    explain_en, explain_zh = en("close", "server-close"), zh("close", "server-close")
    assert "ack=w+1" in explain_en
    assert "seq is u+1" in explain_en
    assert "ack field, not the seq field" in explain_en
    assert "seq=w+1" not in all_texts("en")
    assert "ack=w+1" in explain_zh
    assert "ack=u+1" in en("close", "client-close")


def test_resent_fin_is_the_third_teardown_segment() -> None:
    for lang in ("en", "zh"):
        text = all_texts(lang)
        assert "third handshake" not in text
        assert "第三次握手的FIN" not in text.replace(" ", "")
    explain_en, explain_zh = en("close", "why-time-wait"), zh("close", "why-time-wait")
    assert "third segment of the teardown" in explain_en
    assert "挥手过程中的第三个报文段" in explain_zh


@pytest.mark.parametrize(
    ("name", "not_from_msl"),
    [
        ("half-close", "not a value computed from an MSL"),
        ("close", "Linux simply uses a fixed 60 s"),
    ],
)
def test_time_wait_is_a_fixed_60_seconds(name: str, not_from_msl: str) -> None:
    text_en, text_zh = texts(name, "en"), texts(name, "zh")
    assert "60 s" in text_en
    assert "TCP_TIMEWAIT_LEN" in text_en
    assert "tcp_fin_timeout" in text_en
    assert "60 秒" in text_zh
    assert not_from_msl in text_en


def test_only_the_active_closer_holds_time_wait() -> None:
    text_en, text_zh = texts("port-reuse", "en"), texts("port-reuse", "zh")
    assert "ports of both ends" not in all_texts("en")
    assert "两端的端口" not in all_texts("zh")
    assert "only on the active closer" in text_en
    assert "one 4-tuple" in text_en
    assert "passive side keeps nothing" in text_en
    assert "tcp_tw_reuse" in text_en
    assert "只出现在主动关闭方" in text_zh
    assert "Only the active closer waits" in texts("half-close", "en")


def test_late_segments_are_not_all_discarded() -> None:
    explain_en, explain_zh = en("port-reuse", "relisten-both"), zh("port-reuse", "relisten-both")
    assert "re-acknowledged" in explain_en
    assert "higher sequence number" in explain_en
    assert "too strong" in explain_en
    assert "任何迟到的报文段都将会被丢弃" not in all_texts("zh")
    assert "言过其实" in explain_zh


def test_no_sentence_of_the_seed_is_copied() -> None:
    seed_phrases = [
        "防止已经失效的连接请求报文又突然发送到了B",
        "此时进入了半关闭状态",
        "期待收到对方下一个报文段的第一个数据字节的序号",
        "用来标记数据段的顺序",
        "首先进行关闭的一方将执行主动关闭",
        "B的资源就白白浪费掉了",
        "在TIME_WAIT状态时两端的端口将不能用",
    ]
    zh = all_texts("zh").replace(" ", "")
    for phrase in seed_phrases:
        assert phrase not in zh


# --- the labs do what the brief says -------------------------------------------------------


def test_handshake_holds_the_client_in_syn_sent() -> None:
    held = step("handshake", "syn-dropped")
    assert held.args["wait"] is False
    assert held.outcome == "pending"
    assert held.expect["client"] == TcpState.SYN_SENT
    assert held.expect["server"] is None
    listen = step("handshake", "listen")
    assert listen.args["backlog"] == 0
    assert listen.args["accept"] is False
    assert step("handshake", "accept").timeout >= 4


def test_half_close_server_sends_after_the_fin() -> None:
    sent = step("half-close", "server-sends-after-fin")
    assert sent.expect["server"] == TcpState.CLOSE_WAIT
    got = step("half-close", "client-receives")
    assert got.expect["client"] == TcpState.FIN_WAIT2
    assert got.data == sent.args["data"]
    assert step("half-close", "server-sees-eof").outcome == "EOF"
    assert step("half-close", "server-close").expect["client"] == TcpState.TIME_WAIT


def test_close_puts_time_wait_on_whoever_closed_first() -> None:
    assert step("close", "server-close").expect["client"] == TcpState.TIME_WAIT
    assert step("close", "second-close").expect["server.second"] == TcpState.TIME_WAIT
    assert step("close", "second-close").expect["second"] is None


def test_port_reuse_needs_the_option_on_both_sockets() -> None:
    outcomes = {s.id: s.outcome for s in lab("port-reuse").steps}
    assert outcomes["relisten-plain"] == "EADDRINUSE"
    assert outcomes["relisten-new-only"] == "EADDRINUSE"
    assert outcomes["relisten-old-only"] == "EADDRINUSE"
    assert outcomes["relisten-both"] == "ok"
    assert step("port-reuse", "relisten-both").facts == {"so_reuseaddr": 1}
    probe = step("port-reuse", "default-probe")
    assert probe.args["reuse_address"] == "default"
    assert probe.facts == {"so_reuseaddr": 1}


def test_close_wait_leak_observes_close_wait_then_fixes_it() -> None:
    held = step("close-wait-leak", "still-close-wait")
    assert held.action == "observe"
    assert held.expect["server"] == TcpState.CLOSE_WAIT
    assert "ss -tanp state close-wait" in " ".join(held.explain.en.split())
    assert step("close-wait-leak", "fix").expect["server"] is None


def test_reset_leaves_no_time_wait() -> None:
    assert step("reset", "refused").outcome == "ECONNREFUSED"
    assert step("reset", "server-sees-reset").outcome == "ECONNRESET"
    for s in lab("reset").steps:
        assert TcpState.TIME_WAIT not in s.expect.values()


def test_the_example_in_docs_is_a_valid_lab() -> None:
    doc = (LAB_DIR.parent / "docs" / "labs.md").read_text(encoding="utf-8")
    match = re.search(r"```toml\n(.*?)```", doc, re.DOTALL)
    assert match is not None
    example = parse_lab(match.group(1).encode(), "docs/labs.md")
    assert example.name == "tiny-close"
    assert [s.id for s in example.steps] == ["listen", "connect", "client-close", "server-close"]


# --- the held labs (netns): each hold is where KERNEL-FACTS says it works -----------------


def holds_of(name: str, sid: str) -> dict[str, tuple[str, str, int | None]]:
    return {h.id: (h.kind, h.at, h.count) for h in step(name, sid).holds}


def test_handshake_keeps_its_loopback_form_and_gains_a_netns_form() -> None:
    loopback = [s.id for s in lab("handshake").steps_for("loopback")]
    assert loopback == [
        "listen",
        "fill-queue",
        "syn-dropped",
        "accept",
        "who-is-first",
        "why-three",
        "send",
        "echo",
    ]
    netns_only = [s for s in lab("handshake").steps if s.only == "netns"]
    assert [s.id for s in netns_only] == [
        "synack-dropped",
        "synack-released",
        "ack-dropped",
        "data-completes",
        "late-echo",
    ]
    assert holds_of("handshake", "synack-dropped") == {"synack": ("drop_synack", "client", None)}
    held = step("handshake", "synack-dropped")
    assert held.expect == {"held": TcpState.SYN_SENT, "server.held": TcpState.SYN_RECV}
    assert held.facts == {"dropped.synack": ">=2"}
    assert step("handshake", "synack-released").release == ("synack",)
    assert holds_of("handshake", "ack-dropped") == {"ack": ("drop_pure_ack", "server", None)}
    lazy = step("handshake", "ack-dropped")
    # The seed's claim 2: the client is ESTABLISHED while the server is still SYN_RECV.
    assert lazy.expect == {"lazy": TcpState.ESTABLISHED, "server.lazy": TcpState.SYN_RECV}
    assert step("handshake", "data-completes").expect["server.lazy"] == TcpState.ESTABLISHED
    assert "not only a bare ACK" in en("handshake", "data-completes")


def test_lost_last_ack_holds_fin_wait1_and_last_ack() -> None:
    assert holds_of("lost-last-ack", "fin-wait1-held") == {
        "finack": ("drop_ack_of_fin", "client", None)
    }
    assert step("lost-last-ack", "fin-wait1-held").expect["client"] == TcpState.FIN_WAIT1
    assert step("lost-last-ack", "fin-acked").expect["client"] == TcpState.FIN_WAIT2
    # LAST_ACK held until a later step releases it, not for one retransmission: a slow
    # observer (an agent on another VM) must still find it.
    assert holds_of("lost-last-ack", "last-ack-held") == {
        "lastack": ("drop_pure_ack", "server", None)
    }
    last = step("lost-last-ack", "last-ack-held")
    assert last.expect == {"client": TcpState.TIME_WAIT, "server": TcpState.LAST_ACK}
    assert last.facts == {"dropped.lastack": ">=2"}
    assert last.stay >= 1.0  # long enough for the server's FIN to be resent and re-ACKed
    again = step("lost-last-ack", "fin-again")
    assert again.release == ("lastack",)
    assert again.expect == {"client": TcpState.TIME_WAIT, "server": None}
    # The resend after the release may be several doubled timeouts away on a slow machine.
    assert again.timeout >= 10
    assert "{sysctl:net.ipv4.tcp_rto_min_us}" in en("lost-last-ack", "last-ack-held")
    assert "{sysctl:net.ipv4.tcp_orphan_retries}" in en("lost-last-ack", "fin-again")
    assert "third segment of the teardown" in en("lost-last-ack", "last-ack-held")
    assert "restarts its 60 s timer" in en("lost-last-ack", "fin-again")
    assert "not simply discarded" in en("lost-last-ack", "why-time-wait")


def test_simultaneous_close_in_one_process_closes_both_ends_at_once_and_releases_together() -> (
    None
):
    local = [s.id for s in lab("simultaneous-close").steps_for("netns")]
    assert local == [
        "listen",
        "connect",
        "both-close",
        "fins-cross",
        "both-time-wait",
        "two-time-waits",
    ]
    both = step("simultaneous-close", "both-close")
    assert (both.actor, both.action, both.only) == ("lab", "close_both", "netns-local")
    assert holds_of("simultaneous-close", "both-close") == {
        "fin-into-server": ("hold_fin", "server", None),
        "fin-into-client": ("hold_fin", "client", None),
        "ack-into-server": ("drop_pure_ack", "server", None),
        "ack-into-client": ("drop_pure_ack", "client", None),
    }
    assert both.expect == {"client": TcpState.FIN_WAIT1, "server": TcpState.FIN_WAIT1}
    cross = step("simultaneous-close", "fins-cross")
    # Two holds released by one step go at the same instant (the runner's _apply_holds).
    assert set(cross.release) == {"fin-into-server", "fin-into-client"}
    assert cross.expect == {"client": TcpState.CLOSING, "server": TcpState.CLOSING}
    assert cross.stay > 0
    end = step("simultaneous-close", "both-time-wait")
    assert set(end.release) == {"ack-into-server", "ack-into-client"}
    assert end.expect == {"client": TcpState.TIME_WAIT, "server": TcpState.TIME_WAIT}
    assert "both move to CLOSING" in en("simultaneous-close", "fins-cross")
    assert "{sysctl:net.ipv4.tcp_rto_min_us}" in en("simultaneous-close", "both-close")


def test_simultaneous_close_at_an_agent_lets_the_held_fins_go_one_at_a_time() -> None:
    agent = [s.id for s in lab("simultaneous-close").steps_for("netns-agent")]
    assert agent == [
        "listen",
        "connect",
        "client-closes",
        "server-closes",
        "server-closing",
        "client-time-wait",
        "release",
        "two-time-waits",
    ]
    assert holds_of("simultaneous-close", "client-closes") == {
        "fin-to-server": ("hold_fin", "server", None),
        "fin-to-client": ("hold_fin", "client", None),
    }
    assert holds_of("simultaneous-close", "server-closes") == {
        "ack-to-server": ("drop_pure_ack", "server", None),
        "ack-to-client": ("drop_pure_ack", "client", None),
    }
    both = step("simultaneous-close", "server-closes")
    assert both.expect == {"client": TcpState.FIN_WAIT1, "server": TcpState.FIN_WAIT1}
    closing = step("simultaneous-close", "server-closing")
    assert closing.release == ("fin-to-server",)
    assert closing.expect == {"client": TcpState.FIN_WAIT1, "server": TcpState.CLOSING}
    assert step("simultaneous-close", "client-time-wait").expect == {
        "client": TcpState.TIME_WAIT,
        "server": TcpState.CLOSING,
    }
    released = step("simultaneous-close", "release")
    assert set(released.release) == {"ack-to-server", "ack-to-client"}
    assert released.expect == {"client": TcpState.TIME_WAIT, "server": TcpState.TIME_WAIT}
    assert "CLOSING" in en("simultaneous-close", "server-closing")
    assert "agent runs the server" in en("simultaneous-close", "client-closes")
    # Each release waits for a FIN resent after a timer that doubled while it was held: on a
    # slow machine (two TCG VMs) the held steps take seconds, and the wait grows with them.
    assert closing.timeout >= 20
    assert step("simultaneous-close", "client-time-wait").timeout >= 20
    assert released.timeout >= 30


def test_simultaneous_open_needs_no_listener_and_runs_on_loopback() -> None:
    loaded = lab("simultaneous-open")
    assert "loopback" in loaded.topologies
    assert all(s.action != "listen" for s in loaded.steps)
    first = step("simultaneous-open", "self-connect")
    assert first.action == "self_connect"
    assert first.expect == {"client": TcpState.ESTABLISHED}
    assert "SYN_SENT" in en("simultaneous-open", "self-connect")
    assert "SYN_RECV" in en("simultaneous-open", "self-connect")


def test_stale_syn_makes_no_connection() -> None:
    assert step("stale-syn", "old-syn").action == "stale_syn"
    assert holds_of("stale-syn", "old-syn") == {"rst": ("drop_rst", "server", None)}
    assert step("stale-syn", "old-syn").expect == {
        "server.ghost": TcpState.SYN_RECV,
        "ghost": None,
    }
    assert step("stale-syn", "rst-arrives").expect["server.ghost"] is None
    assert step("stale-syn", "rst-arrives").timeout >= 4
    assert "three segments are needed" in en("stale-syn", "rst-arrives")


def test_rst_validation_forges_out_of_window_in_window_and_exact_segments() -> None:
    forged = [s for s in lab("rst-validation").steps if s.action == "forge"]
    assert [(s.id, dict(s.args)) for s in forged] == [
        ("rst-out-of-window", {"flags": "RST", "offset": 1000000, "count": 1}),
        ("rst-in-window", {"flags": "RST", "offset": 1000, "count": 2}),
        ("syn", {"flags": "SYN", "offset": 0, "count": 1}),
        ("rst-exact", {"flags": "RST", "offset": 0, "count": 1}),
    ]
    # The connection survives every forged segment but the exact RST, long enough for the
    # SYN's challenge ACK to come after the per-connection rate limit (500 ms by default).
    for s in forged[:3]:
        assert s.expect == {"client": TcpState.ESTABLISHED, "server": TcpState.ESTABLISHED}
        assert s.stay >= 0.5
    assert step("rst-validation", "rst-in-window").stay >= 1.0
    assert step("rst-validation", "rst-exact").expect == {
        "client": TcpState.ESTABLISHED,
        "server": None,
    }
    assert step("rst-validation", "challenges-counted").facts == {
        "TcpExt.TCPChallengeACK": 2,
        "TcpExt.TCPACKSkippedChallenge": 1,
        "TcpExt.TCPSYNChallenge": 1,
    }
    assert step("rst-validation", "server-reads").outcome == "ECONNRESET"
    assert step("rst-validation", "client-reads").outcome == "ECONNRESET"
    counted = en("rst-validation", "challenges-counted")
    assert "{sysctl:net.ipv4.tcp_challenge_ack_limit}" in counted
    assert "{sysctl:net.ipv4.tcp_invalid_ratelimit}" in en("rst-validation", "rst-in-window")


def test_port_exhaustion_fails_then_reuses_a_time_wait() -> None:
    loaded = lab("port-exhaustion")
    assert loaded.sysctls == {"client": {"net.ipv4.ip_local_port_range": "40000 40009"}}
    assert step("port-exhaustion", "churn").facts == {"connected": 10, "time_wait": 10}
    assert step("port-exhaustion", "no-port-left").outcome == "EADDRNOTAVAIL"
    assert step("port-exhaustion", "tw-reuse").args == {
        "key": "net.ipv4.tcp_tw_reuse",
        "value": 1,
    }
    reused = step("port-exhaustion", "reused")
    assert reused.args["retry"] is True
    assert reused.outcome == "ok"
    assert "loopback" in en("port-exhaustion", "no-port-left")  # why the default 2 fails


def test_syn_backlog_counts_the_dropped_syns_only_in_a_fresh_namespace() -> None:
    counters = step("syn-backlog", "counters")
    assert counters.only == "netns"
    assert counters.facts == {"TcpExt.ListenOverflows": ">=2", "TcpExt.ListenDrops": ">=2"}
    assert [s.id for s in lab("syn-backlog").steps_for("loopback")] == [
        "listen",
        "fill",
        "syn-dropped",
        "accept",
    ]


def test_every_rfc_state_is_held_for_ss_and_psutil_at_some_step_of_some_lab() -> None:
    # A step's expectation holds only when ss and psutil both report it (runner._states_match
    # requires the sources to agree): so an expected state is a state both tables showed.
    expected = {
        state.name if state is not None else "ABSENT"
        for name in (path.stem for path in LAB_FILES)
        for s in lab(name).steps
        for state in s.expect.values()
    }
    rfc = {t.name for t in TcpState if t is not TcpState.NEW_SYN_RECV and t is not TcpState.CLOSE}
    assert len(rfc | {"ABSENT"}) == 11  # RFC 9293's eleven, CLOSED being "no socket"
    assert rfc | {"ABSENT"} <= expected, sorted(rfc | {"ABSENT"} - expected)


def test_time_wait_syn_reopens_on_both_topologies_and_sends_old_syns_only_in_namespaces() -> None:
    loaded = lab("time-wait-syn")
    # The server closes first, so the TIME_WAIT the new SYN meets is the server's.
    assert step("time-wait-syn", "server-closes").actor == "server"
    assert step("time-wait-syn", "client-closes").expect["server"] is TcpState.TIME_WAIT
    assert step("time-wait-syn", "reconnect").action == "reconnect"
    assert step("time-wait-syn", "reconnect").expect == {
        "client": TcpState.ESTABLISHED,
        "server": TcpState.ESTABLISHED,
    }
    assert [s.id for s in loaded.steps_for("loopback") if s.action == "reconnect"] == ["reconnect"]
    # The raw copies and the server's sysctl and counters: only where both ends are ours.
    for s in loaded.steps:
        if s.action in {"old_syn", "sysctl", "counters"}:
            assert s.only == "netns-local", s.id
    assert step("time-wait-syn", "old-syn-guarded").expect["server"] is TcpState.TIME_WAIT
    assert step("time-wait-syn", "old-syn-guarded").stay >= 0.5  # tcp_invalid_ratelimit
    assert step("time-wait-syn", "old-syn-assassinates").expect["server"] is None
    assert "assassination" in en("time-wait-syn", "old-syn-assassinates")
    assert "暗杀" in zh("time-wait-syn", "old-syn-assassinates")
