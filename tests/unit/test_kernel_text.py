"""Texts that quote the running kernel: placeholders checked at load, filled when drawn."""

from __future__ import annotations

import pytest

from handshake_lab.errors import LabInvalidError
from handshake_lab.render.kernel_text import kernel_text
from handshake_lab.spec.loader import builtin_dir, load_lab, parse_lab
from handshake_lab.spec.model import KERNEL_FIGURES, cited_sysctls
from handshake_lab.topo.pair import read_sysctls

KERNEL = {"net.ipv4.tcp_fin_timeout": "30", "net.ipv4.tcp_syn_linear_timeouts": None}


def test_placeholders_are_filled_with_the_kernels_value_or_say_it_is_missing() -> None:
    text = (
        "fin {sysctl:net.ipv4.tcp_fin_timeout} s; linear {sysctl:net.ipv4.tcp_syn_linear_timeouts}"
    )
    assert kernel_text(text, KERNEL, "en") == "fin 30 s; linear not on this kernel"
    assert kernel_text(text, KERNEL, "zh") == "fin 30 s; linear 此内核没有"
    assert kernel_text("no placeholder", KERNEL, "en") == "no placeholder"


def test_rtt_is_the_steps_srtt_of_that_side_or_says_it_was_not_measured() -> None:
    text = "one RTT: {rtt:client}; the filler's {rtt:filler}; the server's {rtt:server.held}"
    tcp_info = {"client": {"rtt_ms": 50.94, "rttvar_ms": 25.5, "rto_ms": 254.0}}
    tcp_info |= {"server.held": {"rtt_ms": 0.0, "rttvar_ms": 250.0, "rto_ms": 1000.0}}
    assert kernel_text(text, KERNEL, "en", tcp_info) == (
        "one RTT: 50.9 ms; the filler's not measured in this run; "
        "the server's not measured in this run"
    )
    assert kernel_text("{rtt:client}", KERNEL, "zh") == "本次运行未测得"


def test_the_handshake_lab_names_the_rtt_its_client_measured() -> None:
    """The accept step quotes the client's srtt (placeholder); nothing else does yet."""
    lab = load_lab(builtin_dir() / "handshake.toml")
    cited = [s.id for s in lab.steps if "{rtt:client}" in s.explain.en + s.explain.zh]
    assert cited == ["accept"]


LAB = """
schema = 1
name = "x"
title = "x"
summary = "x"
[[step]]
id = "a"
actor = "server"
action = "listen"
expect = {{ listener = "LISTEN" }}
explain = "{text}"
"""


@pytest.mark.parametrize(
    "text",
    [
        "{sysctl:net.ipv4.tcp_fin_timeout",
        "{sysctl:../../etc}",
        "{sysctl:NET.IPV4.X}",
        "{sysctl:}",
        "{rtt:client",
        "{rtt:}",
        "{rtt:Client}",
        "{rtt:a.b.c}",
    ],
)
def test_a_malformed_placeholder_is_refused_at_load(text: str) -> None:
    with pytest.raises(LabInvalidError, match="placeholder"):
        parse_lab(LAB.format(text=text).encode(), "x.toml")


def test_the_builtin_labs_cite_real_timer_sysctls() -> None:
    cited = {
        key
        for path in sorted(builtin_dir().glob("*.toml"))
        for key in cited_sysctls(load_lab(path).texts())
    }
    assert "net.ipv4.tcp_fin_timeout" in cited
    assert "net.ipv4.tcp_syn_linear_timeouts" in cited
    assert cited <= set(KERNEL_FIGURES)  # the timer sysctls every run records
    values = read_sysctls(sorted(cited))
    assert values["net.ipv4.tcp_fin_timeout"] is not None  # on every kernel
    assert values["net.ipv4.tcp_fin_timeout"].isdigit()
