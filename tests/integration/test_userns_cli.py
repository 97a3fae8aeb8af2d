"""``--topology netns`` without root: the run reruns itself in a private user namespace.

Not marked ``root``: as a normal user these tests take the path a normal user takes; as root
(CI) ``HANDSHAKE_LAB_USERNS=1`` sends the run down the same path (``unshare -rn``, the rerun,
the private ``/run``), so CI exercises it too. They skip only where the kernel refuses
unprivileged user namespaces, and say so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab
from handshake_lab.topo.caps import user_namespaces_work
from handshake_lab.topo.userns import CHILD_ENV, FORCE_ENV
from tests import needs
from tests.integration.test_cli import CLI, cli


@pytest.fixture(autouse=True, scope="module")
def _needs_userns_and_nft() -> None:
    """Skip where the kernel refuses user namespaces or nft is missing; under CI, fail."""
    works, detail = user_namespaces_work()
    needs.require(works, f"no unprivileged user namespaces here: {detail}")
    needs.tool("nft")


NETNS_LABS = [
    name
    for name in builtin_names()
    if "netns" in load_lab(builtin_dir() / f"{name}.toml").topologies
]


def userns_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CHILD_ENV}
    if os.geteuid() == 0:
        env[FORCE_ENV] = "1"  # root would build the namespaces directly: take the user's path
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, env=userns_env(), timeout=120)


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


LAB_NET = re.compile(r"\b198\.1[89]\.")


def host_view() -> set[str]:
    """Host lines that a user-namespace run could leave: a link or address naming ``hslab-``
    or a lab address (198.18.0.0/15). Its namespaces, veths and addresses live in a private
    namespace the host never sees, and no correct run of any kind puts such a line in the
    host's own namespace; so a concurrent run, a decoy namespace or a VM bridge coming and
    going (all elsewhere in ``ip netns list`` and ``ip link``) cannot trip this, as the
    whole-host comparison did (issue 18)."""

    def out(*argv: str) -> list[str]:
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return [line for line in text.splitlines() if "hslab-" in line or LAB_NET.search(line)]

    return {*out("ip", "-o", "link"), *out("ip", "-o", "addr")}


@pytest.fixture
def host_unchanged() -> Iterator[None]:
    before = host_view()
    yield
    assert host_view() - before == set()


@pytest.mark.usefixtures("host_unchanged")
@pytest.mark.parametrize("lab", NETNS_LABS)
def test_every_netns_lab_passes_in_a_user_namespace(lab: str) -> None:
    proc = run_cli("run", lab, "--topology", "netns", "--json")
    assert proc.returncode == ExitStatus.OK, proc.stderr + proc.stdout[-3000:]
    assert "private user namespace" in proc.stderr
    evs = events(proc.stdout)
    header, steps, result = evs[0], [e for e in evs if e["event"] == "step"], evs[-1]
    assert header["topology"] == "netns"
    assert any("user namespace" in note for note in header["notes"]), header["notes"]
    assert header["evidence"]["trace"] == "off"  # tracefs needs the initial user namespace
    assert result["passed"]
    assert result["agreed"] == result["steps"] == len(steps)
    assert all(step["agrees"] for step in steps)
    # The capture works there: CAP_NET_RAW over the lab's own namespaces is enough.
    assert header["evidence"]["capture"].startswith("AF_PACKET on hslab-"), header["evidence"]
    # Every hold a step declared was proved by its nft counter, read back in that namespace.
    holds = {name: h for step in steps for name, h in step["holds"].items()}
    assert all(h["dropped"] >= 1 for h in holds.values()), holds


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_lost_last_ack_shows_its_lesson_in_a_user_namespace(loop_name: str) -> None:
    proc = run_cli("run", "lost-last-ack", "--topology", "netns", "--json", "--loop", loop_name)
    assert proc.returncode == ExitStatus.OK, proc.stderr
    steps = {e["id"]: e for e in events(proc.stdout) if e["event"] == "step"}
    assert steps["fin-wait1-held"]["observed"]["client"]["state"] == "FIN_WAIT1"
    assert steps["last-ack-held"]["observed"]["server"]["state"] == "LAST_ACK"
    dropped = steps["fin-again"]["facts"]["dropped.lastack"]
    assert dropped >= 2
    tail = steps["last-ack-held"]["segments"] + steps["fin-again"]["segments"]
    fins = [s for s in tail if s["from"] == "server" and "FIN" in s["flags"]]
    assert len(fins) == dropped + 1, tail  # resent until an answer got through
    assert len({s["seq"] for s in fins}) == 1, tail  # the same FIN, resent
    assert steps["fin-again"]["observed"]["client"]["state"] == "TIME_WAIT"


def test_pcap_is_written_by_the_user_and_run_paths_are_refused(tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcap"
    proc = run_cli("run", "half-close", "--topology", "netns", "--pcap", str(pcap))
    assert proc.returncode == ExitStatus.OK, proc.stderr
    assert pcap.read_bytes()[:4] in {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"}
    assert pcap.stat().st_uid == os.getuid()  # root inside the namespace is this user outside

    refused = run_cli("run", "half-close", "--topology", "netns", "--pcap", "/run/hslab-t.pcap")
    if os.access("/run", os.W_OK):  # writable here: refused because the rerun's /run is private
        assert refused.returncode == ExitStatus.USAGE, refused.stderr
        assert "private /run" in refused.stderr
    else:  # a user who cannot write /run at all is told that first (Debian's /run is root's)
        assert refused.returncode == ExitStatus.OUTPUT_UNWRITABLE, refused.stderr
        assert "cannot create a file in /run" in refused.stderr
    assert not Path("/run/hslab-t.pcap").exists()


def _holders(inode: int, kind: str) -> list[int]:
    """Pids whose ``kind`` namespace (user, net) is ``inode``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns" / kind).stat().st_ino == inode:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_leaves_nothing_behind(host_unchanged: None, sig: signal.Signals) -> None:
    """The kernel frees the namespaces (and every veth, rule and socket in them) with the
    process: nothing for a cleanup to do, even after SIGKILL. SIGTERM is Ctrl-C: exit 130."""
    del host_unchanged
    with subprocess.Popen(
        [*CLI, "run", "lost-last-ack", "--topology", "netns", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=userns_env(),
    ) as proc:
        try:
            assert proc.stdout is not None
            seen = []
            for line in proc.stdout:  # bounded by the lab itself: ~2 s to its end
                seen.append(json.loads(line))
                if seen[-1]["event"] == "step" and seen[-1]["id"] == "fin-wait1-held":
                    break
            assert seen, "the run printed nothing"
            assert seen[-1]["event"] == "step", seen
            own_user = Path("/proc/self/ns/user").stat().st_ino
            user_ns = Path(f"/proc/{proc.pid}/ns/user").stat().st_ino
            assert user_ns != own_user  # the rerun really is in a user namespace of its own
        finally:
            proc.send_signal(sig)
            returncode = proc.wait(timeout=20)
    assert returncode == (-signal.SIGKILL if sig == signal.SIGKILL else ExitStatus.INTERRUPTED)
    deadline = time.monotonic() + 10
    while _holders(user_ns, "user") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _holders(user_ns, "user") == []
