"""doctor words the netns and tracefs lines itself, in en and zh, from the lower layers' facts
(``topo.caps.NetnsRoute``, ``observe.trace.trace_facts``): every case they can report has
its text, in both languages (the tracefs English is also the run header's note)."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab.i18n.doctor import DOCTOR_TEXTS, doctor_text
from handshake_lab.observe.trace import TRACE_CASES, trace_capability, trace_facts
from handshake_lab.topo.caps import NetnsRoute

ROUTES = ("root", "userns", "no_ip", "no_userns")


@pytest.mark.parametrize("case", TRACE_CASES)
def test_each_trace_case_is_worded_in_both_languages(case: str) -> None:
    values = {"uid": "1000", "root": "/sys/kernel/tracing", "path": "/x", "events": "a, b"}
    en = doctor_text(f"trace_{case}", "en", values)
    assert en != doctor_text(f"trace_{case}", "zh", values)
    assert "{" not in en


@pytest.mark.parametrize("how", ROUTES)
def test_each_netns_route_is_worded_in_both_languages(how: str) -> None:
    route = NetnsRoute(how in ("root", "userns"), how, "unshare -rn works", nft=True)
    en = doctor_text(f"netns_{how}", "en", {"detail": route.detail})
    zh = doctor_text(f"netns_{how}", "zh", {"detail": route.detail})
    assert en != zh
    if how in ("root", "userns"):
        assert route.detail in en
        assert route.detail in zh


def test_no_route_or_trace_text_is_left_over() -> None:
    worded = {k for k in DOCTOR_TEXTS if k.startswith(("netns_", "trace_"))}
    expected = {f"netns_{h}" for h in ROUTES} | {f"trace_{c}" for c in TRACE_CASES}
    ipv6 = {"netns_ok", "netns_disabled", "netns_error", "netns_unknown"}  # the netns6 line
    assert worded == expected | ipv6 | {"netns_nft_missing", "trace_missing"}


def test_trace_facts_name_the_missing_tracefs_directory(tmp_path: Path) -> None:
    ok, case, values = trace_facts(tmp_path / "nowhere")
    assert case in TRACE_CASES
    assert trace_capability(tmp_path / "nowhere") == (
        ok,
        doctor_text(f"trace_{case}", "en", values),
    )
    if case == "no_dir":
        assert (ok, values) == (False, {"root": str(tmp_path / "nowhere")})
