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
    ["{sysctl:net.ipv4.tcp_fin_timeout", "{sysctl:../../etc}", "{sysctl:NET.IPV4.X}", "{sysctl:}"],
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
