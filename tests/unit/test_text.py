"""State explanations: every state in both languages, with the Linux specifics."""

from __future__ import annotations

import re

import pytest

from handshake_lab.i18n.labels import label as ui
from handshake_lab.i18n.lang import LANGS
from handshake_lab.i18n.states import StateText, state_names, state_text, unwrap
from handshake_lab.spec.model import ABSENT
from handshake_lab.tcp.states import TcpState

CJK = re.compile(r"[\u4e00-\u9fff]")
ALL_NAMES = [s.name for s in TcpState] + [ABSENT]


def test_every_state_and_absent_has_a_text() -> None:
    assert set(state_names()) == set(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_text_in_both_languages(name: str) -> None:
    en = state_text(name, "en")
    zh = state_text(name, "zh")
    assert isinstance(en, StateText)
    for part in (en.title, en.body, zh.title, zh.body):
        assert part
    assert en.body != zh.body
    assert CJK.search(zh.title)
    assert CJK.search(zh.body)
    assert not CJK.search(en.body)
    sentences = len(re.findall(r"[.!?](?=\s|$)", en.body))
    assert 2 <= sentences <= 4, (name, sentences)
    assert 2 <= len(re.findall(r"[。！？]", zh.body)) <= 4


@pytest.mark.parametrize("name", ALL_NAMES)
def test_chinese_bodies_have_no_stray_spaces(name: str) -> None:
    body = state_text(name, "zh").body
    assert "\n" not in body
    assert not re.search(r"[\u4e00-\u9fff，。；：] [\u4e00-\u9fff，。；：]", body)


def test_linux_specifics() -> None:
    assert "60 s" in state_text("TIME_WAIT", "en").body
    assert "TCP_TIMEWAIT_LEN" in state_text("TIME_WAIT", "en").body
    assert "60 秒" in state_text("TIME_WAIT", "zh").body
    assert "tcp_fin_timeout" in state_text("FIN_WAIT2", "en").body
    assert "SYN-RECV" in state_text("SYN_RECV", "en").body
    assert "SYN-RECV" in state_text("NEW_SYN_RECV", "en").body
    assert "close()" in state_text("CLOSE_WAIT", "en").body
    assert "no timer" in state_text("CLOSE_WAIT", "en").body.lower()


def test_unknown_language_falls_back_to_english() -> None:
    assert state_text("LISTEN", "fr") == state_text("LISTEN", "en")
    assert ui("expected", "fr") == ui("expected", "en")


def test_unknown_state_raises_key_error() -> None:
    with pytest.raises(KeyError):
        state_text("SYN_SEND", "en")


def test_ui_words_exist_in_every_language() -> None:
    for key in ("step", "expected", "kernel", "outcome", "agrees", "disagrees", "absent"):
        words = {lang: ui(key, lang) for lang in LANGS}
        assert all(words.values())
        assert CJK.search(words["zh"])
    with pytest.raises(KeyError):
        ui("no-such-word", "en")


def test_unwrap_joins_latin_with_spaces_and_chinese_without() -> None:
    assert unwrap("one\ntwo") == "one two"
    assert unwrap("第一行，\n第二行") == "第一行，第二行"
    assert unwrap("SYN\n报文段") == "SYN报文段"
    assert unwrap("\n  a  \n\n  b \n") == "a b"
