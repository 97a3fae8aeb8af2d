"""netns helpers, sysctl key checks and the capability report (no root needed)."""

from __future__ import annotations

import os

import pytest

from handshake_lab import tools
from handshake_lab.errors import NetworkError
from handshake_lab.i18n.doctor import doctor_text
from handshake_lab.topo import caps
from handshake_lab.topo.netns import in_netns, netns_exec_argv, netns_path
from handshake_lab.topo.pair import NetnsPair, set_sysctl, sysctl_path


def test_netns_exec_argv_prefixes_ip_netns_exec() -> None:
    assert netns_exec_argv("hslab-1-abcd-srv", ["ss", "-tan"]) == [
        tools.command("ip"),  # by full path: ip netns exec would search PATH
        "netns",
        "exec",
        "hslab-1-abcd-srv",
        "ss",
        "-tan",
    ]


@pytest.mark.parametrize("name", ["", "..", "a/b", "."])
def test_bad_namespace_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="bad network namespace name"):
        netns_path(name)


def test_entering_a_missing_namespace_is_a_network_error_and_changes_nothing() -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(NetworkError, match="no network namespace"), in_netns("hslab-0-none-x"):
        pass
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_sysctl_keys_map_to_proc_sys_and_must_be_per_namespace() -> None:
    assert str(sysctl_path("net.ipv4.tcp_tw_reuse")) == "/proc/sys/net/ipv4/tcp_tw_reuse"
    for bad in ["kernel.pid_max", "net.ipv4", "net..x", "net.ipv4.../x", "vm.swappiness"]:
        with pytest.raises(ValueError, match="net"):
            sysctl_path(bad)


def test_sysctls_are_never_set_outside_our_namespaces() -> None:
    with pytest.raises(ValueError, match="not one of ours"):
        set_sysctl("blue", "net.ipv4.tcp_tw_reuse", 1)


def test_pair_names_and_addresses_follow_the_run_id() -> None:
    pair = NetnsPair(run_id="42-a1b2")
    assert pair.server_ns == "hslab-42-a1b2-srv"
    assert pair.client_ns == "hslab-42-a1b2-cli"
    assert (pair.server_veth, pair.client_veth) == ("hslab-a1b2-s", "hslab-a1b2-c")
    assert (pair.server_addr, pair.client_addr) == ("198.18.0.1", "198.18.0.2")
    pair.close()  # never created: nothing to do
    with pytest.raises(ValueError, match="not a namespace of run"):
        pair.set_sysctl("hslab-other-srv", "net.ipv4.tcp_tw_reuse", 1)


def test_capability_as_root_with_ip_is_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/sbin/{name}")
    ok, reason = caps.netns_capability()
    assert ok
    assert "root" in reason


def test_capability_without_root_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(caps, "user_namespaces_work", lambda: (True, "unshare -rn works"))
    ok, reason = caps.netns_capability()
    assert not ok
    assert "reruns itself in a user namespace" in reason
    assert "--topology netns" in reason
    monkeypatch.setattr(caps, "user_namespaces_work", lambda: (False, "unshare -rn refused"))
    ok, reason = caps.netns_capability()
    assert not ok
    assert "user namespaces are unavailable" in reason


def test_route_without_root_is_the_user_namespace_when_it_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(caps, "user_namespaces_work", lambda: (True, "unshare -rn works"))
    ok, how = route_line()
    assert ok
    assert "private user namespace" in how
    assert "no transition stream" in how
    monkeypatch.setattr(caps, "user_namespaces_work", lambda: (False, "unshare -rn refused"))
    ok, how = route_line()
    assert not ok
    assert "run as root" in how


def route_line() -> tuple[bool, str]:
    """The route's facts, and doctor's English line for them."""
    route = caps.netns_route_facts()
    return route.ok, doctor_text(f"netns_{route.how}", "en", {"detail": route.detail})


def test_capability_as_root_without_ip_is_not_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name, path=None: None)
    ok, reason = caps.netns_capability()
    assert not ok
    assert "ip not found" in reason
