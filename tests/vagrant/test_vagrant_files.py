"""The two-VM files, checked without booting anything.

The Vagrantfile must parse (``ruby -c``) and validate (``vagrant validate``, where vagrant is
installed; with vagrant-libvirt also the libvirt provider's settings); the shell scripts must
pass shellcheck; the unit template must have the keys the agent relies on; every address must
sit in the benchmarking range 198.18.0.0/15; and the agent token must never be on a command
line. A missing ruby or shellcheck skips those checks on a developer's machine but fails under
CI, which installs them. ``run-all-labs.sh`` is exercised against a stub ``vagrant``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from handshake_lab.topo import vmhold
from tests import needs

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"
VAGRANT_DIR = ROOT / "vagrant"
PROVISION = VAGRANT_DIR / "provision.sh"
RUN_ALL = VAGRANT_DIR / "run-all-labs.sh"
UNIT = VAGRANT_DIR / "handshake-lab-agent.service"
SCRIPTS = sorted(VAGRANT_DIR.glob("*.sh"))
LAB_NET = ipaddress.ip_network("198.18.0.0/15")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys may repeat; continuation lines join)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def vagrant_env(tmp_path: Path) -> dict[str, str]:
    """An environment for vagrant with no HSLAB_* overrides and a private VAGRANT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSLAB_", "VAGRANT_"))}
    env["VAGRANT_HOME"] = str(tmp_path / "vagrant.d")
    env["VAGRANT_CHECKPOINT_DISABLE"] = "1"
    return env


def copy_vagrant_tree(tmp_path: Path) -> Path:
    """Vagrantfile + vagrant/ in a scratch dir: the Vagrantfile writes .vagrant/ beside itself."""
    work = tmp_path / "tree"
    work.mkdir()
    shutil.copy2(VAGRANTFILE, work / "Vagrantfile")
    shutil.copytree(VAGRANT_DIR, work / "vagrant")
    return work


# ---------------------------------------------------------------------------- Vagrantfile


def test_vagrantfile_parses_with_ruby() -> None:
    ruby = needs.tool("ruby")
    out = subprocess.run(
        [ruby, "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "Syntax OK" in out.stdout


def _validate(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["vagrant", "validate", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _has_libvirt_plugin(work: Path, env: dict[str, str]) -> bool:
    out = subprocess.run(
        ["vagrant", "plugin", "list"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "vagrant-libvirt" in out.stdout


def test_vagrant_validate(tmp_path: Path) -> None:
    """Both machines and all provisioners validate; libvirt's settings too when it is there."""
    needs.tool("vagrant", "--no-install-recommends vagrant")
    work = copy_vagrant_tree(tmp_path)
    env = vagrant_env(tmp_path)

    # VirtualBox is not in Debian, so its provider block cannot be checked here.
    out = _validate(work, env, "--ignore-provider")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout

    needs.require(
        _has_libvirt_plugin(work, env),
        "vagrant-libvirt is not installed (apt install vagrant-libvirt): libvirt settings "
        "not validated",
    )
    for driver in ("kvm", "qemu"):
        lv_env = env | {"HSLAB_PROVIDER": "libvirt", "HSLAB_LIBVIRT_DRIVER": driver}
        out = _validate(work, lv_env)
        assert out.returncode == 0, f"driver {driver}: {out.stdout}{out.stderr}"


def test_vagrantfile_makes_a_private_token_file(tmp_path: Path) -> None:
    needs.tool("vagrant", "--no-install-recommends vagrant")
    work = copy_vagrant_tree(tmp_path)
    out = _validate(work, vagrant_env(tmp_path), "--ignore-provider")
    assert out.returncode == 0, out.stdout + out.stderr
    token = work / ".vagrant" / "hslab-agent-token"
    assert token.stat().st_mode & 0o777 == 0o600
    first = token.read_text()
    assert len(first.strip()) >= 32
    _validate(work, vagrant_env(tmp_path), "--ignore-provider")
    assert token.read_text() == first, "the token must be made once, not on every command"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HSLAB_SERVER_IP", "10.0.0.10"),
        ("HSLAB_CLIENT_IP", "192.168.56.11"),
        ("HSLAB_SERVER_IP", "198.20.0.1"),
        ("HSLAB_CLIENT_IP", "not-an-address"),
        ("HSLAB_LIBVIRT_DRIVER", "xen"),
        ("HSLAB_PROVIDER", "docker"),
    ],
)
def test_vagrantfile_refuses_bad_settings(tmp_path: Path, name: str, value: str) -> None:
    needs.tool("vagrant", "--no-install-recommends vagrant")
    work = copy_vagrant_tree(tmp_path)
    out = _validate(work, vagrant_env(tmp_path) | {name: value}, "--ignore-provider")
    assert out.returncode != 0
    assert name in out.stdout + out.stderr


def _vagrantfile() -> str:
    return VAGRANTFILE.read_text()


def _shell_default(var: str) -> str:
    match = re.search(rf"\$\{{{var}:-([^}}]+)\}}", PROVISION.read_text())
    assert match, f"no default for {var} in provision.sh"
    return match[1]


def test_default_addresses_are_in_the_benchmarking_range() -> None:
    defaults = {
        "server": re.search(r'"HSLAB_SERVER_IP", "([^"]+)"', _vagrantfile()),
        "client": re.search(r'"HSLAB_CLIENT_IP", "([^"]+)"', _vagrantfile()),
    }
    for role, match in defaults.items():
        assert match, f"no default {role} address in the Vagrantfile"
        assert ipaddress.ip_address(match[1]) in LAB_NET, role
        # The script's own defaults (used when it runs outside Vagrant) agree with the VMs'.
        assert _shell_default(f"HSLAB_{role.upper()}_IP") == match[1], role
    port = re.search(r'"HSLAB_AGENT_PORT", "(\d+)"', _vagrantfile())
    assert port, "no default agent port in the Vagrantfile"
    assert _shell_default("HSLAB_AGENT_PORT") == port[1]


def test_every_literal_address_is_in_the_benchmarking_range() -> None:
    """No file of the two-VM set names an IPv4 address outside 198.18.0.0/15 (masks aside)."""
    quad = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?:/\d+)?(?![\d.])")
    for path in (VAGRANTFILE, PROVISION, UNIT, RUN_ALL):
        for match in quad.finditer(path.read_text()):
            address = ipaddress.ip_address(match[1])
            if match[1].startswith("255."):  # a netmask
                continue
            assert address in LAB_NET, f"{path.name}: {match[0]}"


def test_private_network_is_isolated() -> None:
    text = _vagrantfile()
    assert "virtualbox__intnet" in text, "VirtualBox: an internal network, no host adapter"
    assert 'libvirt__forward_mode: "none"' in text, "libvirt: an isolated network"
    assert "0.0.0.0" not in text


# ---------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = needs.tool("shellcheck")
    out = subprocess.run(
        [shellcheck, "--severity=style", "--shell=bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_bash(script: Path) -> None:
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


def _provision(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        ["bash", str(PROVISION), *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "usage: provision.sh server|client"),
        (("router",), {}, "usage: provision.sh server|client"),
        (("server",), {"HSLAB_SERVER_IP": "10.1.2.3"}, "HSLAB_SERVER_IP=10.1.2.3 is not in"),
        (("client",), {"HSLAB_CLIENT_IP": "198.20.1.1"}, "HSLAB_CLIENT_IP=198.20.1.1 is not in"),
        (("server",), {"HSLAB_SERVER_IP": "198.18.1.300"}, "is not in 198.18.0.0/15"),
        (("server",), {"HSLAB_CLIENT_IP": "198.18.1.10"}, "must differ"),
        (("server",), {"HSLAB_AGENT_PORT": "70000"}, "is not a port number"),
    ],
)
def test_provision_refuses_bad_settings_before_touching_anything(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    # These checks come before the root check, so they are safe to run as anyone, anywhere.
    out = _provision(env, *args)
    assert out.returncode == 1
    assert message in out.stderr
    assert out.stdout == ""


# ---------------------------------------------------------------------------- agent unit


def test_unit_has_the_expected_keys() -> None:
    unit = parse_unit(UNIT.read_text())
    assert "network-online.target" in unit["Unit"]["After"]
    assert "network-online.target" in unit["Unit"]["Wants"]
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service.get("User", ["root"]) == ["root"], "nft holds need root"
    assert service["EnvironmentFile"] == ["/etc/handshake-lab/agent.env"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[:2] == ["/opt/handshake-lab/bin/handshake-lab", "agent"]
    assert argv[argv.index("--bind") + 1] == "${HSLAB_AGENT_BIND}"
    assert argv[argv.index("--port") + 1] == "${HSLAB_AGENT_PORT}"
    assert argv[argv.index("--token-file") + 1] == "/etc/handshake-lab/agent-token"


def test_agent_never_binds_every_address() -> None:
    for path in (UNIT, PROVISION, VAGRANTFILE):
        text = path.read_text()
        assert "0.0.0.0" not in text, path.name
        assert "--bind ::" not in text, path.name
    assert re.search(r"^HSLAB_AGENT_BIND=\$SERVER_IP$", PROVISION.read_text(), re.M)


def test_token_is_never_on_a_command_line() -> None:
    unit = parse_unit(UNIT.read_text())
    for section in unit.values():
        for key, values in section.items():
            for value in values:
                assert "HSLAB_AGENT_TOKEN" not in value, f"{key}={value}"
                if key.startswith("Exec"):
                    assert not re.search(r"--token(?:[= ]|$)", value), f"{key}={value}"
    assert "Environment" not in unit["Service"], "a token in Environment= is world-readable"
    # provision.sh: the token travels file -> file and into the helper's environment only.
    script = PROVISION.read_text()
    for line in script.splitlines():
        if "handshake-lab run" in line or "handshake-lab agent" in line:
            assert "TOKEN" not in line, line
    assert "HSLAB_AGENT_TOKEN=$(</etc/handshake-lab/agent-token)" in script
    # The Vagrantfile hands provision.sh the path of an uploaded file, never the value.
    vagrantfile = _vagrantfile()
    assert re.search(r'"HSLAB_TOKEN_IN" => "/tmp/hslab-agent-token"', vagrantfile)
    assert 'type: "file"' in vagrantfile
    env_block = vagrantfile[vagrantfile.index("def hslab_provision_env") :]
    env_block = env_block[: env_block.index("\nend")]
    assert "TOKEN_FILE" not in env_block
    assert "File.read" not in env_block


def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    """The template, with its paths pointed at stand-ins, passes ``systemd-analyze verify``."""
    analyze = needs.tool("systemd-analyze", "systemd")
    fake_bin = tmp_path / "handshake-lab"
    fake_bin.write_text("#!/bin/sh\nexit 0\n")
    fake_bin.chmod(0o755)
    env_file = tmp_path / "agent.env"
    env_file.write_text("HSLAB_AGENT_BIND=198.18.1.10\nHSLAB_AGENT_PORT=7878\n")
    token = tmp_path / "agent-token"
    token.write_text("x\n")
    text = (
        UNIT.read_text()
        .replace("/opt/handshake-lab/bin/handshake-lab", str(fake_bin))
        .replace("/etc/handshake-lab/agent.env", str(env_file))
        .replace("/etc/handshake-lab/agent-token", str(token))
    )
    unit = tmp_path / "handshake-lab-agent.service"
    unit.write_text(text)
    out = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # Only complaints about our unit count; a host may have unrelated broken units.
    ours = [line for line in out.stderr.splitlines() if "handshake-lab-agent" in line]
    assert not ours, out.stderr


# ---------------------------------------------------------------------------- run-all-labs


STUB_VAGRANT = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    # A stand-in for vagrant: records its calls, lists two labs, fails reset on uvloop.
    echo "$*" >> "$STUB_LOG"
    case "$*" in
      up) exit 0 ;;
      "ssh client -c handshake-lab list --json")
        printf '{"labs": [{"name": "close"}, {"name": "reset"}]}\\r\\n'; exit 0 ;;
      *"hslab-peer-run 'reset' --loop 'uvloop'"*) echo "kernel disagrees"; exit 3 ;;
      *"handshake-lab sweep handshake --delay 0,50,200 --json"*)
        printf '%s\r\n' "$STUB_SWEEP"; exit "${STUB_SWEEP_RC:-0}" ;;
      *hslab-peer-run*) echo "kernel agrees"; exit 0 ;;
    esac
    echo "stub vagrant: unexpected call: $*" >&2
    exit 99
    """
)


def sweep_doc(answers: tuple[float, float, float] = (0.1, 50.2, 200.3)) -> str:
    """A sweep's JSON (render.sweep.sweep_json) with the client's SYN_SENT answering after
    ``answers`` ms at +0, +50 and +200 ms, the kernel's srtt one ms above each."""
    runs = [
        {
            "delay_ms": delay,
            "loss_pct": 0.0,
            "passed": True,
            "measured": {"client": {"rtt_ms": answer + 1, "rttvar_ms": 1.0, "rto_ms": 250.0}},
            "states": [
                {
                    "side": "client",
                    "state": "SYN_SENT",
                    "duration_ms": 1000 + answer,
                    "answer_ms": answer,
                }
            ],
        }
        for delay, answer in zip((0.0, 50.0, 200.0), answers, strict=True)
    ]
    return json.dumps({"format": "hslab-sweep/1", "lab": "handshake", "runs": runs})


def _run_all(
    tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    work = copy_vagrant_tree(tmp_path)
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "vagrant"
    stub.write_text(STUB_VAGRANT)
    stub.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env |= {"PATH": f"{stub_dir}:{env.get('PATH', '/usr/bin:/bin')}", "STUB_LOG": str(log)}
    env |= {"STUB_SWEEP": sweep_doc()}
    env |= extra_env or {}
    out = subprocess.run(
        ["bash", str(work / "vagrant" / "run-all-labs.sh"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out, log.read_text().splitlines()


def test_run_all_labs_runs_every_lab_on_both_loops_and_fails_on_any_failure(
    tmp_path: Path,
) -> None:
    out, calls = _run_all(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert calls[0] == "up"
    runs = [c for c in calls if "hslab-peer-run" in c]
    assert len(runs) == 4
    summary = out.stdout[out.stdout.index("== summary") :]
    assert re.search(r"^close\s+pass\s+pass\s*$", summary, re.M), summary
    assert re.search(r"^reset\s+pass\s+FAIL\(3\)\s*$", summary, re.M), summary
    assert "sweep: pass" in summary
    assert "4/5 runs passed" in summary
    logs = tmp_path / "tree" / ".vagrant" / "hslab-results"
    assert (logs / "reset.uvloop.log").read_text().strip() == "kernel disagrees"


def test_run_all_labs_passes_when_every_run_passes(tmp_path: Path) -> None:
    out, calls = _run_all(tmp_path, "--no-up", extra_env={"HSLAB_LOOPS": "asyncio"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "up" not in calls
    assert "sweep +200 ms: client SYN_SENT" in out.stdout
    assert "3/3 runs passed" in out.stdout


def test_run_all_labs_fails_when_syn_sent_does_not_follow_the_rtt(tmp_path: Path) -> None:
    """The sweep ran and every run agreed, but the answer at +200 ms is not one RTT."""
    out, _ = _run_all(
        tmp_path,
        "--no-up",
        extra_env={"HSLAB_LOOPS": "asyncio", "STUB_SWEEP": sweep_doc((0.1, 50.2, 20.0))},
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "sweep PROBLEM: +200 ms: answer 20 ms is shorter than the delay" in out.stdout
    assert "sweep: FAIL(0)" in out.stdout
    assert "2/3 runs passed" in out.stdout


def test_run_all_labs_skips_the_sweep_when_told(tmp_path: Path) -> None:
    out, calls = _run_all(
        tmp_path, "--no-up", extra_env={"HSLAB_LOOPS": "asyncio", "HSLAB_SWEEP": "0"}
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert not any("sweep" in c for c in calls)
    assert "2/2 runs passed" in out.stdout


def test_run_all_labs_refuses_to_boot_vms_under_ci() -> None:
    out = subprocess.run(
        ["bash", str(RUN_ALL)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CI": "true"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "refusing to boot VMs under CI" in out.stderr


def _provision_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """What the Vagrantfile hands to provision.sh, evaluated by ruby with Vagrant stubbed out."""
    ruby = needs.tool("ruby")
    work = copy_vagrant_tree(tmp_path)
    script = textwrap.dedent(
        """
        require "json"
        module Vagrant
          def self.configure(_version); end
        end
        load ARGV[0]
        puts JSON.generate(hslab_provision_env("server"))
        """
    )
    out = subprocess.run(
        [ruby, "-e", script, str(work / "Vagrantfile")],
        env=vagrant_env(tmp_path) | extra,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    env: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return env


def test_vagrantfile_passes_the_wheel_dir_on_to_provisioning(tmp_path: Path) -> None:
    """The documented offline install: HSLAB_WHEEL_DIR must reach provision.sh."""
    env = _provision_env(tmp_path, {"HSLAB_WHEEL_DIR": "/vagrant/wheelhouse"})
    assert env["HSLAB_WHEEL_DIR"] == "/vagrant/wheelhouse"
    unset = tmp_path / "unset"
    unset.mkdir()
    assert "HSLAB_WHEEL_DIR" not in _provision_env(unset, {})


def test_provisioning_writes_the_marker_the_tool_checks() -> None:
    """provision.sh's marker line must be the one ``topo.vmhold`` accepts, at its path."""
    text = PROVISION.read_text()
    match = re.search(r'^readonly MARKER_TEXT="([^"]+)"$', text, re.MULTILINE)
    assert match
    assert match[1] == vmhold.MARKER_TEXT
    assert "readonly MARKER=$CONF_DIR/provisioned-vm" in text
    assert str(vmhold.MARKER) == "/etc/handshake-lab/provisioned-vm"
    body = text[text.index("install_marker() {") :]
    assert body.index("in_chroot") < body.index('write_file 0644 "$MARKER"'), (
        "a chroot (somebody's machine) must never get the marker"
    )
