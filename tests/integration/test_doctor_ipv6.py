"""``doctor``'s IPv6 lines on this machine: what they say must be what a run meets.

Two real checks: here, the ``-6`` line agrees with ``run close -6`` on loopback; and in a
private namespace where IPv6 is switched off (``unshare -rn``, no root needed), doctor names the
sysctl, says ``-6`` is for namespaces only there, and ``run -6`` is indeed refused.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from handshake_lab.topo.ipv6 import read_ipv6_facts
from tests import needs
from tests.integration.test_cli import cli

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, env={**os.environ, "COLUMNS": "200"}, timeout=120)


def _lines(stdout: str) -> dict[str, str]:
    """doctor's lines by name: 'ok  ::1       usable...' -> {'::1': 'ok usable...'}."""
    out: dict[str, str] = {}
    name = ""
    for line in stdout.splitlines():
        if line.startswith(" ") and name:  # a long line, wrapped: its continuation
            out[name] += f" {line.strip()}"
            continue
        mark, name, *rest = line.split(maxsplit=2)
        out[name] = f"{mark} {' '.join(rest)}"
    return out


def test_the_facts_are_this_machines() -> None:
    facts = read_ipv6_facts(probe_netns=False)
    assert facts.kernel == Path("/proc/sys/net/ipv6").is_dir()
    if not facts.kernel:
        return
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        bound = True
    except OSError:
        bound = False
    assert (facts.loopback_error is None) == bound
    raw = Path("/proc/sys/net/ipv6/bindv6only").read_text(encoding="ascii")
    assert facts.bindv6only == int(raw)


def test_the_minus_6_line_agrees_with_a_minus_6_run_on_loopback() -> None:
    doctor = _cli("doctor", "--lang", "en")
    assert doctor.returncode == 0, doctor.stderr
    lines = _lines(doctor.stdout)
    assert {"ipv6", "-6"} <= set(lines), doctor.stdout
    loopback_ok = lines.get("::1", "--").startswith("ok")
    run = _cli("run", "close", "-6", "--topology", "loopback", "--json")
    assert (run.returncode == 0) == loopback_ok, (lines, run.stderr)
    says_loopback = "loopback" in lines["-6"] and "not on loopback" not in lines["-6"]
    assert says_loopback == loopback_ok, lines["-6"]
    zh = _lines(_cli("doctor", "--lang", "zh").stdout)
    assert set(zh) == set(lines)  # the same lines, in Chinese
    assert "环回" in zh["-6"] or "无法" in zh["-6"]


def test_with_ipv6_off_doctor_names_the_sysctl_and_run_minus_6_is_refused() -> None:
    unshare = needs.tool("unshare")
    script = (
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && ip link set lo up && "
        f"{sys.executable} -m handshake_lab doctor --lang en; echo doctor=$?; "
        f"{sys.executable} -m handshake_lab run close -6; echo run=$?; "
        f"{sys.executable} -m handshake_lab run dual-stack; echo dual=$?"
    )
    done = subprocess.run(
        [unshare, "-rn", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin"},
    )
    needs.require(done.returncode == 0, f"no private user namespace here: {done.stderr.strip()}")
    doctor, _, rest = done.stdout.partition("doctor=")
    assert rest.startswith("0"), done.stdout
    lines = _lines(doctor)
    assert lines["::1"] == (
        "-- IPv6 is switched off here (net.ipv6.conf.all.disable_ipv6 = 1): no ::1"
    ), doctor
    # A namespace made from there resets IPv6 to the kernel's defaults (the probe measured it).
    if lines["netns6"].startswith("ok"):
        assert lines["-6"].startswith("-- -6 labs and lab dual-stack run in namespaces only")
    else:
        assert lines["-6"].startswith("-- -6 labs and lab dual-stack cannot run here")
    assert "run=6" in done.stdout
    assert "no IPv6 loopback" in done.stderr
    # The dual-stack lab needs ::1 as well, and has no --ip 4 to offer instead.
    assert "dual=6" in done.stdout
    assert (
        "handshake-lab: lab dual-stack uses IPv6 too, and this machine has no IPv6 loopback "
        "(::1: Cannot assign requested address)"
    ) in done.stderr.splitlines()


def test_doctor_speaks_chinese_on_every_line_it_words_itself() -> None:
    """The basics (root, nft, capture...) follow --lang like the IPv6 and netem lines; what a
    line quotes from elsewhere (a path, a version, a kernel's reason) stays as it is."""
    en = _lines(_cli("doctor", "--lang", "en").stdout)
    zh = _lines(_cli("doctor", "--lang", "zh").stdout)
    assert set(zh) == set(en)
    worded = {"root", "netns", "nft", "capture", "tracefs", "ipv6", "::1", "v6only", "netns6"}
    worded |= {"-6", "netem"}
    for name in worded & set(en):
        assert re.search(r"[\u4e00-\u9fff]", zh[name]), (name, zh[name])
        assert zh[name] != en[name], name
    for name in ("ss", "psutil", "uvloop"):  # a path or a version: the same in both
        if en[name].startswith("ok"):
            assert zh[name] == en[name], name
