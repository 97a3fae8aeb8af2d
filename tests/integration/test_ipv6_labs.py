"""Every built-in lab with ``--ip 6``: on ::1, and (root) in namespaces on 2001:db8:198:18::/64.

One run per lab and topology, the loop alternating between asyncio and uvloop across the labs
(the IPv4 tests run every lab on both loops; here the question is the address family, so one
loop each keeps the added time small). Each run goes through ``session.execute``, the path
``run -6`` takes: placement, observers of the one family, capture and transition stream where
permitted. Every step must agree with the kernel, every socket the run saw and every segment it
captured must be IPv6, printed as ss prints it (``[addr]:port``), and every event must follow
the schema (``Recorded`` checks it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from handshake_lab.errors import UsageError
from handshake_lab.lab.session import RunRequest, execute
from handshake_lab.placement import Topology
from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab
from handshake_lab.spec.model import ABSENT
from handshake_lab.topo.pair import SERVER_ADDR6
from tests import needs
from tests.integration.labrun import Recorded
from tests.integration.test_cli import cli
from tests.schema_check import assert_valid_lines

LABS = [load_lab(builtin_dir() / f"{name}.toml") for name in builtin_names()]
LOOPS = ("asyncio", "uvloop")
V6_PREFIX = {Topology.LOOPBACK: "[::1]:", Topology.NETNS: "[2001:db8:198:18::"}
HOST = {Topology.LOOPBACK: "::1", Topology.NETNS: SERVER_ADDR6}


def _cases(topology: Topology) -> list[object]:
    # A dual-stack lab (ip = "dual") uses both families in every run and refuses --ip 6:
    # test_a_dual_stack_lab_refuses_ip_6_in_one_line checks that, its own tests its runs.
    labs = [lab for lab in LABS if topology.step_set in lab.topologies and not lab.dual]
    marks = [pytest.mark.root] if topology is Topology.NETNS else []
    return [
        pytest.param(lab.name, LOOPS[i % 2], id=f"{lab.name}-{LOOPS[i % 2]}", marks=marks)
        for i, lab in enumerate(labs)
    ]


def _run_v6(name: str, loop: str, topology: Topology) -> None:
    lab = load_lab(builtin_dir() / f"{name}.toml")
    recorded = Recorded()
    execute(RunRequest(lab=lab, topology=topology, loop=loop, ip=6), recorded)
    prefix = V6_PREFIX[topology]
    assert recorded.header.host == HOST[topology]
    wanted = lab.steps_for(topology.step_set)
    assert list(recorded.steps) == [s.id for s in wanted]
    segments = 0
    for step in wanted:
        report = recorded.steps[step.id]
        assert report.mismatches == [], (step.id, report.mismatches)
        for side, expected in step.expect.items():
            observed = report.observed[side]
            assert observed.state == (expected.name if expected else ABSENT), (step.id, side)
            if expected is not None:
                assert observed.local is not None
                assert observed.local.startswith(prefix), (step.id, side, observed.local)
                assert observed.sources["psutil"] == expected.name, (step.id, side)
        for segment in report.segments:
            segments += 1
            assert segment["src"].startswith(prefix), (step.id, segment)
            assert segment["dst"].startswith(prefix), (step.id, segment)
        for transition in report.transitions:
            assert transition["local"].startswith(prefix), (step.id, transition)
    if recorded.header.evidence.get("packets"):
        assert segments > 0  # the capture decoded IPv6 frames on lo / the veth
    assert recorded.result.passed
    assert recorded.audit() == []  # and `grade` finds the IPv6 record consistent


@pytest.mark.parametrize(("name", "loop"), _cases(Topology.LOOPBACK))
def test_builtin_lab_agrees_with_the_kernel_on_ipv6_loopback(name: str, loop: str) -> None:
    _run_v6(name, loop, Topology.LOOPBACK)


@pytest.mark.parametrize(("name", "loop"), _cases(Topology.NETNS))
def test_builtin_lab_agrees_with_the_kernel_on_ipv6_in_namespaces(name: str, loop: str) -> None:
    _run_v6(name, loop, Topology.NETNS)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli(*args, env={**os.environ, **(env or {})}, timeout=120)


def test_run_dash_6_prints_brackets_and_show_and_report_draw_it(tmp_path: Path) -> None:
    saved, page = tmp_path / "close6.jsonl", tmp_path / "close6.html"
    done = _cli("run", "close", "-6", "--topology", "loopback", "--save", str(saved))
    assert done.returncode == 0, done.stderr
    assert assert_valid_lines(saved.read_text(encoding="utf-8")) > 2
    assert "| topology loopback ::1 |" in done.stdout
    ladder = [line for line in done.stdout.splitlines() if " <-> server " in line]
    if os.geteuid() == 0:  # packets are captured on loopback as root only (the ladder needs them)
        assert ladder, done.stdout
    else:
        assert "packets: off" in done.stdout, done.stdout
    assert all(line.startswith("client [::1]:") for line in ladder), ladder
    assert "127.0.0.1" not in done.stdout
    shown = _cli("show", str(saved))
    assert (shown.returncode, shown.stdout) == (0, done.stdout)  # drawn again, the same text
    assert _cli("report", str(saved), "--output", str(page)).returncode == 0
    html = page.read_text(encoding="utf-8")
    assert "[::1]:" in html
    assert "127.0.0.1" not in html


DUAL_LABS = [lab.name for lab in LABS if lab.dual]


def test_the_matrix_leaves_out_only_the_labs_that_use_both_families() -> None:
    assert DUAL_LABS == ["dual-stack"]
    for topology in (Topology.LOOPBACK, Topology.NETNS):
        matrix = {p.values[0] for p in _cases(topology)}  # type: ignore[attr-defined]
        declared = {lab.name for lab in LABS if topology.step_set in lab.topologies}
        assert matrix == declared - set(DUAL_LABS)


@pytest.mark.parametrize("name", DUAL_LABS)
@pytest.mark.parametrize("option", [["-6"], ["--ip", "6"], ["--ip", "4"]])
def test_a_dual_stack_lab_refuses_ip_in_one_line(name: str, option: list[str]) -> None:
    """Its steps name each socket's family: --ip would choose nothing, and a record saying
    "IPv6" (or "IPv4") of a run of both would not be true. Refused before step 1."""
    done = _cli("run", name, *option)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"handshake-lab: lab {name} uses IPv4 and IPv6 together in every run (its steps name "
        "each socket's family): leave out --ip/-6"
    ), done.stderr
    assert "Step 1" not in done.stdout
    lab = load_lab(builtin_dir() / f"{name}.toml")
    with pytest.raises(UsageError, match="not --ip 6"):  # the API refuses it too
        execute(RunRequest(lab=lab, topology=Topology.LOOPBACK, ip=6), Recorded())


def test_dash_6_and_ip_4_together_is_a_usage_error() -> None:
    done = _cli("run", "close", "-6", "--ip", "4")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "handshake-lab: -6 and --ip 4 contradict each other: give one"
    ), done.stderr


def test_ip_6_is_refused_before_step_1_with_a_peer() -> None:
    done = _cli("run", "close", "--ip", "6", "--peer", "198.18.1.10")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "handshake-lab: --peer runs on IPv4 only; --ip 6 needs a --topology"
    ), done.stderr
    assert "Step 1" not in done.stdout


@pytest.mark.root
def test_the_namespace_agent_serves_an_ipv6_lab() -> None:
    """The server end in an agent process bound to 2001:db8:198:18::1, its observers
    reading IPv6, driven over the agent protocol across the veth on IPv6."""
    done = _cli("run", "close", "-6", "--topology", "netns-agent", "--json")
    assert done.returncode == 0, done.stderr
    assert assert_valid_lines(done.stdout) > 2
    assert '"host": "2001:db8:198:18::1"' in done.stdout
    assert '"local": "[2001:db8:198:18::1]:' in done.stdout  # the agent's own sockets


@pytest.mark.root
def test_ipv6_netns_lab_runs_in_a_user_namespace_too() -> None:
    """The path a normal user takes (forced here as root): raw SYN and nft rules on IPv6."""
    done = _cli("run", "stale-syn", "-6", "--json", env={"HANDSHAKE_LAB_USERNS": "1"})
    assert done.returncode == 0, done.stderr
    assert "private user namespace" in done.stderr
    assert assert_valid_lines(done.stdout) > 2
    assert '"[2001:db8:198:18::2]:' in done.stdout


def test_play_dash_6_drives_a_half_close_on_ipv6(tmp_path: Path) -> None:
    script = tmp_path / "half-close.txt"
    script.write_text("connect\nshutdown client\nclose server\nclose client\n", encoding="utf-8")
    done = _cli("play", "-6", "--script", str(script), "--json")
    assert done.returncode == 0, done.stderr
    assert_valid_lines(done.stdout)
    steps = [json.loads(line) for line in done.stdout.splitlines() if '"event": "step"' in line]
    assert [s["action"] for s in steps] == ["listen", "connect", "send_eof", "close", "close"]
    assert all(s["agrees"] for s in steps)
    assert steps[2]["observed"]["client"]["state"] == "FIN_WAIT2"
    assert steps[2]["observed"]["client"]["local"].startswith("[::1]:")
    assert steps[-1]["observed"]["client"]["state"] == "TIME_WAIT"


def test_watch_shows_ipv6_sockets_as_ss_prints_them() -> None:
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("::1", port), timeout=5) as client:
            accepted, _ = listener.accept()
            with accepted:
                done = _cli("watch", "--port", str(port), "--once", "--json")
                local = f"[::1]:{client.getsockname()[1]}"
    assert done.returncode == 0, done.stderr
    sockets = {
        (doc["local"], doc["remote"], doc["state"])
        for doc in map(json.loads, done.stdout.splitlines())
        # Other programs' sockets may use the same port number (on 127.0.0.1, say): only ours.
        if doc.get("event") == "socket" and doc["local"] in {f"[::1]:{port}", local}
    }
    assert sockets == {
        (f"[::1]:{port}", None, "LISTEN"),
        (local, f"[::1]:{port}", "ESTABLISHED"),
        (f"[::1]:{port}", local, "ESTABLISHED"),
    }, done.stdout


def test_without_ipv6_loopback_dash_6_is_refused_in_one_line() -> None:
    """In a private namespace with IPv6 disabled (unshare -rn: no root needed), ``-6`` stops
    before step 1 with exit 6 and says what to do."""
    unshare = needs.tool("unshare")
    script = (
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && ip link set lo up && "
        f"{sys.executable} -m handshake_lab run close -6; echo rc=$?"
    )
    done = subprocess.run(
        [unshare, "-rn", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    needs.require("rc=" in done.stdout, f"unshare -rn is not allowed here: {done.stderr.strip()}")
    assert done.stdout.strip().endswith("rc=6"), done.stdout
    assert done.stderr.strip().startswith("handshake-lab: --ip 6: this machine has no IPv6")
    assert "Step 1" not in done.stdout
