"""Names, registry file format and leftover filtering (no root, no kernel objects)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from handshake_lab.topo import registry
from handshake_lab.topo.registry import (
    FORMAT,
    KernelObject,
    RunRegistry,
    cleanup_leftovers,
    filter_owned,
    is_owned_name,
    new_run_id,
    nft_table_name,
    object_name,
    owner_alive,
    parse_registry,
    process_start_time,
    read_registries,
    stale_cleanup,
    veth_name,
)


def test_run_id_is_pid_and_four_hex_digits() -> None:
    assert re.fullmatch(rf"{os.getpid()}-[0-9a-f]{{4}}", new_run_id())
    assert new_run_id(42).startswith("42-")


def test_object_names_carry_prefix_run_id_and_role() -> None:
    assert object_name("42-a1b2", "srv") == "hslab-42-a1b2-srv"
    with pytest.raises(ValueError, match="bad run id"):
        object_name("42/x", "srv")


def test_veth_names_fit_ifnamsiz_even_with_the_largest_pid() -> None:
    name = veth_name(f"{4194304}-a1b2", "server")
    assert name == "hslab-a1b2-s"
    assert len(name) <= 15


def test_nft_table_name_replaces_dashes_and_refuses_foreign_namespaces() -> None:
    assert nft_table_name("hslab-42-a1b2-srv") == "hslab_42_a1b2_srv"
    with pytest.raises(ValueError, match="not one of ours"):
        nft_table_name("myns")


@pytest.mark.parametrize(
    ("name", "owned"),
    [
        ("hslab-42-a1b2-srv", True),
        ("hslab_42_a1b2_srv", True),
        ("hslab-", False),
        ("hslab", False),
        ("hslabx", False),
        ("hslabx-1", False),
        ("myhslab-1", False),
        ("HSLAB-1", False),
        ("", False),
    ],
)
def test_only_names_with_the_exact_prefix_are_ours(name: str, owned: bool) -> None:
    assert is_owned_name(name) is owned


def test_filter_owned_never_keeps_a_name_without_the_prefix() -> None:
    names = ["blue", "hslab", "hslabx", "hslab-1-abcd-srv", "ns-hslab-1", "hslab_1"]
    assert filter_owned(names) == ["hslab-1-abcd-srv", "hslab_1"]


def test_registry_file_lists_objects_before_creation_and_goes_when_empty(
    tmp_path: Path,
) -> None:
    reg = RunRegistry("42-a1b2", tmp_path)
    srv = KernelObject("netns", "hslab-42-a1b2-srv")
    cli = KernelObject("netns", "hslab-42-a1b2-cli")
    reg.record(srv, cli)
    data = json.loads((tmp_path / "42-a1b2.json").read_text())
    assert data["format"] == FORMAT
    assert data["run_id"] == "42-a1b2"
    assert data["pid"] == os.getpid()
    assert data["pid_start"] == process_start_time(os.getpid())
    assert data["objects"] == [
        {"kind": "netns", "name": "hslab-42-a1b2-srv"},
        {"kind": "netns", "name": "hslab-42-a1b2-cli"},
    ]
    reg.forget(srv)
    assert [o.name for o in parse_registry(reg.path.read_text(), reg.path).objects] == [cli.name]
    reg.forget(cli)
    assert not reg.path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_registry_refuses_to_record_a_foreign_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RunRegistry("1-abcd", tmp_path).record(KernelObject("netns", "blue"))


def test_objects_inside_a_namespace_round_trip() -> None:
    obj = KernelObject("nft_table", "hslab_1_abcd_srv", netns="hslab-1-abcd-srv")
    assert KernelObject.from_json(obj.to_json()) == obj
    assert str(obj) == "nft_table hslab_1_abcd_srv in netns hslab-1-abcd-srv"


@pytest.mark.parametrize(
    "objects",
    [
        [{"kind": "netns", "name": "blue"}],
        [{"kind": "veth", "name": "hslab-1"}],
        [{"kind": "nft_table", "name": "hslab_1", "netns": "blue"}],
        ["hslab-1"],
    ],
)
def test_a_registry_naming_foreign_objects_is_rejected(objects: list[object]) -> None:
    text = json.dumps({"format": FORMAT, "run_id": "1-abcd", "pid": 1, "objects": objects})
    with pytest.raises(ValueError, match=r"bad registry object|not a JSON object"):
        parse_registry(text, Path("x.json"))


def test_unreadable_or_foreign_registry_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"format": "other"}))
    RunRegistry("1-abcd", tmp_path).record(KernelObject("netns", "hslab-1-abcd-srv"))
    assert [entry.run_id for entry in read_registries(tmp_path)] == ["1-abcd"]


def test_owner_is_dead_when_pid_is_gone_or_was_reused() -> None:
    me = os.getpid()
    assert owner_alive(me, process_start_time(me))
    assert not owner_alive(me, (process_start_time(me) or 0) + 1)  # recycled pid
    assert not owner_alive(0, None)
    assert not owner_alive(2**22 + 1, None)  # above pid_max: no such process


def _dead_registry(tmp_path: Path, name: str) -> RunRegistry:
    """A registry file whose owner looks dead (our pid, but another start time)."""
    reg = RunRegistry("9-dead", tmp_path)
    reg.pid_start = (reg.pid_start or 0) + 1
    reg.record(KernelObject("netns", name))
    return reg


def test_stale_cleanup_drops_a_dead_runs_file_even_if_its_objects_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "NETNS_RUN_DIR", tmp_path / "no-netns")
    reg = _dead_registry(tmp_path, "hslab-9-dead-srv")
    assert stale_cleanup(tmp_path) == []
    assert not reg.path.exists()


def test_stale_cleanup_leaves_a_live_runs_file(tmp_path: Path) -> None:
    reg = RunRegistry("1-live", tmp_path)
    reg.record(KernelObject("netns", "hslab-1-live-srv"))
    assert stale_cleanup(tmp_path) == []
    assert reg.path.exists()


def test_cleanup_leftovers_dry_run_lists_only_prefixed_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for name in ["blue", "hslab", "hslabx", "hslab-4194303-abcd-srv", "hslab-2-live-cli"]:
        (netns_dir / name).touch()
    instances = tmp_path / "instances"
    instances.mkdir()
    for name in ["mytrace", "hslab-4194303-abcd-trace"]:
        (instances / name).mkdir()
    monkeypatch.setattr(registry, "NETNS_RUN_DIR", netns_dir)
    monkeypatch.setattr(registry, "TRACE_INSTANCE_DIRS", (instances,))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # Agent token directories: a dead run's (pid above pid_max) is listed, a live one's and
    # an unprefixed one are not.
    for name in ["hslab-agent-4194303-x1", f"hslab-agent-{os.getpid()}-x2", "agent-4194303"]:
        (temp / name).mkdir()
    live = RunRegistry("2-live", tmp_path / "reg")
    live.record(KernelObject("netns", "hslab-2-live-cli"))

    listed = cleanup_leftovers(dry_run=True, directory=tmp_path / "reg")
    assert [str(obj) for obj in listed] == [
        "trace_instance hslab-4194303-abcd-trace",
        "netns hslab-4194303-abcd-srv",
        "agent_dir hslab-agent-4194303-x1",
    ]
    assert cleanup_leftovers(dry_run=True, directory=tmp_path / "reg", pid=4194303) == listed
    assert cleanup_leftovers(dry_run=True, directory=tmp_path / "reg", pid=4194302) == []
    everything = cleanup_leftovers(dry_run=True, include_live=True, directory=tmp_path / "reg")
    assert KernelObject("netns", "hslab-2-live-cli") in everything
    assert sorted(p.name for p in netns_dir.iterdir()) == [
        "blue",
        "hslab",
        "hslab-2-live-cli",
        "hslab-4194303-abcd-srv",
        "hslabx",
    ]
    assert live.path.exists()


def test_registry_dir_is_per_user_when_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert registry.registry_dir() == tmp_path / "hslab"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert registry.registry_dir().name == f"hslab-{os.getuid()}"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert registry.registry_dir() == Path("/run/hslab")


def test_a_name_carrying_a_live_pid_is_never_a_leftover() -> None:
    import os  # noqa: PLC0415

    from handshake_lab.topo.registry import named_after_live_pid  # noqa: PLC0415

    assert named_after_live_pid(f"hslab-bench-{os.getpid()}")
    assert named_after_live_pid(f"hslab-{os.getpid()}-ab12-srv")
    assert not named_after_live_pid("hslab-4194303-ab12-srv")  # above pid_max: no such pid
    assert not named_after_live_pid("hslab-ab12-srv")


def test_a_recorded_leftover_is_listed_even_when_its_pid_was_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pid_max is often 32768: the dead owner's pid may belong to a new process by now. The
    registry knows the owner exactly (pid and start time), so it decides, not the name."""
    reused = os.getpid()  # a live pid, standing for the reused one
    name = f"hslab-{reused}-abcd-trace"
    instances = tmp_path / "instances"
    (instances / name).mkdir(parents=True)
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    monkeypatch.setattr(registry, "NETNS_RUN_DIR", netns_dir)
    monkeypatch.setattr(registry, "TRACE_INSTANCE_DIRS", (instances,))
    reg = RunRegistry(f"{reused}-abcd", tmp_path / "reg")
    reg.record(KernelObject("trace_instance", name))
    # The recorded owner is our pid but with another start time: a dead run whose pid is reused.
    data = json.loads(reg.path.read_text())
    data["pid_start"] = (data.get("pid_start") or 0) + 1
    reg.path.write_text(json.dumps(data))
    listed = cleanup_leftovers(dry_run=True, directory=tmp_path / "reg")
    assert KernelObject("trace_instance", name) in listed
    # Unrecorded, the same name is spared: its pid is alive and nothing says who made it.
    reg.path.unlink()
    assert KernelObject("trace_instance", name) not in cleanup_leftovers(
        dry_run=True, directory=tmp_path / "reg"
    )
