"""The user-namespace rerun: when it happens, what it runs, what it refuses. No kernel needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from handshake_lab.errors import UsageError
from handshake_lab.topo import userns

INITIAL = "         0          0 4294967295\n"


def test_the_initial_namespace_is_the_identity_map_of_every_uid() -> None:
    assert not userns.in_user_namespace(INITIAL)
    assert userns.in_user_namespace("         0       1000          1\n")
    assert userns.in_user_namespace("0 0 1\n")  # root's own `unshare -r`: still a new namespace
    assert userns.in_user_namespace("")  # no mapping written yet


@pytest.mark.parametrize("text", ["0 0\n", "a b c\n", "0 0 1 2\n"])
def test_a_malformed_uid_map_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="bad uid_map line"):
        userns.parse_uid_map(text)


def test_this_test_process_is_not_in_a_user_namespace() -> None:
    # The test suite runs in the machine's initial user namespace (root in CI, a user here).
    assert not userns.in_user_namespace()
    assert not userns.is_userns_child({userns.CHILD_ENV: "1"})  # a marker alone is not enough


@pytest.mark.parametrize(
    ("euid", "environ", "needs", "child", "expected"),
    [
        (1000, {}, True, False, True),  # a normal user asking for namespaces
        (1000, {}, False, False, False),  # loopback needs nothing
        (1000, {}, True, True, False),  # already rerun: never twice
        (0, {}, True, False, False),  # root builds them directly
        (0, {userns.FORCE_ENV: "1"}, True, False, True),  # root asking to see the user's path
        (0, {userns.FORCE_ENV: "0"}, True, False, False),
    ],
)
def test_when_a_run_is_rerun_in_a_user_namespace(
    euid: int, environ: dict[str, str], needs: bool, child: bool, expected: bool
) -> None:
    decided = userns.wants_userns(euid=euid, environ=environ, needs_netns=needs, in_child=child)
    assert decided is expected


def test_the_rerun_keeps_the_arguments_and_asks_for_private_namespaces() -> None:
    argv = userns.userns_argv(["run", "lost-last-ack", "--json"], python="/usr/bin/python3")
    assert Path(argv[0]).name == "unshare"
    separator = argv.index("--")
    options = argv[1:separator]
    assert {"--user", "--map-root-user", "--net", "--mount"} <= set(options)
    assert options[options.index("--propagation") + 1] == "private"
    assert argv[separator + 1 :] == [
        "/usr/bin/python3", "-m", "handshake_lab", "run", "lost-last-ack", "--json"
    ]  # fmt: skip


def test_without_unshare_the_rerun_is_a_missing_dependency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("HSLAB_SYSTEM_DIRS", "")  # nor in the system directories
    with pytest.raises(Exception, match="util-linux") as info:
        userns.userns_argv(["run", "half-close"])
    assert info.value.exit_status == 6  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/run/x.pcap", "/run", "/run/user/1000/a.pcap"])
def test_output_files_under_run_are_refused(path: str) -> None:
    with pytest.raises(UsageError, match="private /run, where this file"):
        userns.refuse_private_paths([None, Path(path)])


def test_output_files_elsewhere_are_accepted(tmp_path: Path) -> None:
    userns.refuse_private_paths([None, tmp_path / "a.pcap", Path("/running/a.pcap")])
