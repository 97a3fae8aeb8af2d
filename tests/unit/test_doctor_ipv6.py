"""``doctor``'s IPv6 lines: the decision (``topo.ipv6.ipv6_findings``) on fake facts, and the
words for each finding in English and Chinese."""

from __future__ import annotations

import re
import string
from dataclasses import replace

import pytest

from handshake_lab.i18n.doctor import DOCTOR_TEXTS, doctor_text
from handshake_lab.topo.ipv6 import Finding, Ipv6Facts, NetnsIpv6, ipv6_findings

HEALTHY = Ipv6Facts(
    kernel=True,
    disabled={"all": False, "lo": False},
    loopback_error=None,
    bindv6only=0,
    netns=NetnsIpv6(default_disabled=False, bind_error=None),
)
CJK = re.compile(r"[\u4e00-\u9fff]")


def keys(facts: Ipv6Facts) -> dict[str, tuple[bool | None, str]]:
    return {f.name: (f.ok, f.key) for f in ipv6_findings(facts)}


def test_a_machine_with_ipv6_everywhere_can_run_every_ipv6_lab() -> None:
    assert keys(HEALTHY) == {
        "ipv6": (True, "kernel_ok"),
        "::1": (True, "lo_ok"),
        "v6only": (None, "v6only_0"),
        "netns6": (True, "netns_ok"),
        "-6": (True, "six_all"),
    }


def test_a_kernel_without_ipv6_says_so_and_nothing_else_is_checked() -> None:
    assert keys(Ipv6Facts(kernel=False)) == {
        "ipv6": (False, "kernel_missing"),
        "-6": (False, "six_none"),
    }


@pytest.mark.parametrize("which", ["all", "lo"])
def test_ipv6_switched_off_on_loopback_names_the_sysctl_and_leaves_namespaces(which: str) -> None:
    facts = Ipv6Facts(
        kernel=True,
        disabled={"all": which == "all", "lo": True},
        loopback_error="Cannot assign requested address",
        bindv6only=0,
        netns=HEALTHY.netns,
    )
    found = {f.name: f for f in ipv6_findings(facts)}
    assert found["::1"] == Finding(False, "::1", "lo_disabled", {"which": which})
    assert doctor_text("lo_disabled", "en", found["::1"].values) == (
        f"IPv6 is switched off here (net.ipv6.conf.{which}.disable_ipv6 = 1): no ::1"
    )
    # A new namespace resets IPv6 to the kernel's defaults: -6 still runs there.
    assert (found["-6"].ok, found["-6"].key) == (False, "six_netns")


def test_an_unexplained_bind_failure_is_quoted() -> None:
    facts = Ipv6Facts(kernel=True, disabled={"all": False, "lo": False}, loopback_error="boom")
    found = {f.name: f for f in ipv6_findings(facts)}
    assert found["::1"] == Finding(False, "::1", "lo_error", {"error": "boom"})
    assert doctor_text("lo_error", "zh", {"error": "boom"}) == "无法绑定 ::1（boom）"


def test_bindv6only_is_information_either_way() -> None:
    on = replace(HEALTHY, bindv6only=1)
    found = {f.name: f for f in ipv6_findings(on)}
    assert found["v6only"] == Finding(None, "v6only", "v6only_1", {"value": "1"})
    assert "IPV6_V6ONLY" in doctor_text("v6only_1", "en", {"value": "1"})
    assert keys(HEALTHY)["-6"] == keys(on)["-6"]  # the dual-stack lab sets the option itself


@pytest.mark.parametrize(
    ("netns", "note", "line", "six"),
    [
        (NetnsIpv6(True, None), "", (False, "netns_disabled"), (True, "six_loopback")),
        (
            NetnsIpv6(False, "Permission denied"),
            "",
            (False, "netns_error"),
            (True, "six_loopback"),
        ),
        (
            None,
            "no namespace for this user",
            (None, "netns_unknown"),
            (True, "six_loopback_unknown"),
        ),
    ],
)
def test_namespaces_without_ipv6_or_unchecked_narrow_minus_6_to_loopback(
    netns: NetnsIpv6 | None, note: str, line: tuple[bool | None, str], six: tuple[bool, str]
) -> None:
    facts = replace(HEALTHY, netns=netns, netns_note=note)
    found = keys(facts)
    assert found["netns6"] == line
    assert found["-6"] == six
    if netns is None:
        [finding] = [f for f in ipv6_findings(facts) if f.name == "netns6"]
        assert doctor_text(finding.key, "en", finding.values).endswith(note)


def test_nothing_anywhere_means_no_minus_6() -> None:
    facts = replace(
        HEALTHY, loopback_error="x", netns=NetnsIpv6(default_disabled=True, bind_error=None)
    )
    assert keys(facts)["-6"] == (False, "six_none")


def test_every_finding_has_both_languages_with_the_same_placeholders() -> None:
    produced = {
        f.key
        for facts in (
            HEALTHY,
            Ipv6Facts(kernel=False),
            replace(HEALTHY, bindv6only=1, netns=None),
        )
        for f in ipv6_findings(facts)
    }
    assert produced <= set(DOCTOR_TEXTS)
    for key, texts in DOCTOR_TEXTS.items():
        assert set(texts) == {"en", "zh"}, key
        assert CJK.search(texts["zh"]), key
        assert not CJK.search(texts["en"]), key
        fields = [{n for _, n, _, _ in string.Formatter().parse(t) if n} for t in texts.values()]
        assert fields[0] == fields[1], key
