"""vagrant/provision.sh run for real, in a throwaway Debian 12 root, instead of in a VM.

The project's machines must not boot VMs, so the VM path is checked here in two halves:

1. provisioning: ``debootstrap --variant=minbase --include=systemd bookworm`` builds the
   root a Vagrant box would have (systemd is the one thing every box has that minbase lacks),
   from the same mirror apt uses on this machine. ``provision.sh server``, then ``client``, then
   ``server`` again (idempotency) run inside it with the checkout bind-mounted read-only as
   /vagrant, as Vagrant's synced folder would be. apt really installs the packages, pip really
   installs the project into /opt/handshake-lab, the unit is really checked by the chroot's own
   ``systemd-analyze verify`` and enabled offline. Measured here (2 vCPU): debootstrap ~50 s,
   the first provisioning ~25 s (apt + pip), the others ~4 s each: under 1.5 minutes in all, so
   the real thing is cheap enough and no "fake root" mode that replaces apt with checks is
   needed.
2. the agent path: the agent is started with the exact ExecStart of the installed unit (its
   ${VARS} from the installed agent.env) inside the chroot, in a server network namespace
   holding the server's private address; the client helper ``hslab-peer-run`` runs a lab from
   a client namespace holding the client's address. Same binaries, same files, same addresses
   as the two VMs; only the wire is a veth instead of a virtual switch.

Mounts (/proc, the read-only /vagrant) are made inside a private mount namespace (``unshare
--mount``) per command, so they vanish with the command, even on SIGKILL; nothing is ever mounted
in the host's namespace. The root is deleted afterwards, only after checking that nothing is
mounted below it. The root trusts the same extra CA certificates as this machine (a network
that inspects TLS would otherwise stop pip), and nothing else of the host leaks in.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import needs

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "vagrant" / "handshake-lab-agent.service"
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLIENT_IP = "198.18.1.11"  # provision.sh's default, as the Vagrantfile's
# Network settings a user may need for apt and pip, passed into the root when set.
PASSTHROUGH = ("http_proxy", "https_proxy", "no_proxy", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Inside a private mount namespace: /proc, the checkout read-only as /vagrant, then chroot with a
# clean environment (only what the caller lists).
_ENTER = (
    'set -e; r=$1; repo=$2; shift 2; mount -t proc proc "$r/proc"; '
    'mount --bind "$repo" "$r/vagrant"; mount -o remount,bind,ro "$r/vagrant"; '
    'exec chroot "$r" /usr/bin/env -i "$@"'
)


def chroot_argv(root: Path, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """argv that runs ``argv`` in ``root`` with /proc and /vagrant mounted privately."""
    settings = {"PATH": CHROOT_PATH, "LANG": "C.UTF-8"}
    settings |= {k: os.environ[k] for k in PASSTHROUGH if os.environ.get(k)}
    settings |= env or {}
    assigns = [f"{k}={v}" for k, v in settings.items()]
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", _ENTER, "sh", str(root), str(ROOT), *assigns, *argv,
    ]  # fmt: skip


def run_in_root(
    root: Path, argv: list[str], env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        chroot_argv(root, argv, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def debian_mirror() -> str:
    """The first mirror apt is configured with for the Debian release itself (not security)."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for block in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(
                (m[1].lower(), m[2].strip())
                for m in re.finditer(r"^([\w-]+):[ \t]*(.*)$", block, re.M)
            )
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if (
                "deb" in fields.get("types", "").split()
                and SUITE in fields.get("suites", "").split()
            ):
                uri: str = fields["uris"].split()[0]
                return uri
    return FALLBACK_MIRROR


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


@dataclass
class Provisioned:
    root: Path
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _provision(p: Provisioned, name: str, role: str, env: dict[str, str]) -> None:
    started = time.monotonic()
    out = run_in_root(p.root, ["bash", "/vagrant/vagrant/provision.sh", role], env)
    p.seconds[name] = time.monotonic() - started
    p.outputs[name] = out.stdout + out.stderr
    assert out.returncode == 0, f"provision.sh {role} ({name}) failed:\n{p.outputs[name]}"


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    for tool, package in (
        ("debootstrap", "debootstrap"),
        ("unshare", None),
        ("chroot", "coreutils"),
    ):
        needs.tool(tool, package)
    base = tmp_path_factory.mktemp("vm-root")
    p = Provisioned(root=base / "root")
    try:
        started = time.monotonic()
        boot = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=systemd", SUITE, str(p.root),
             debian_mirror()],
            capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        p.seconds["debootstrap"] = time.monotonic() - started
        assert boot.returncode == 0, f"debootstrap failed:\n{boot.stdout[-3000:]}{boot.stderr}"

        # As in any Debian chroot: packages must not start daemons here.
        policy = p.root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (p.root / "vagrant").mkdir()
        local_cas = p.root / "usr/local/share/ca-certificates"
        local_cas.mkdir(parents=True, exist_ok=True)
        for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy2(cert, local_cas / cert.name)

        _provision(p, "server", "server", {})
        # What Vagrant's file provisioner does for the client: upload the server's token.
        token = (p.root / "etc/handshake-lab/agent-token").read_text()
        upload = p.root / "tmp/hslab-agent-token"
        upload.write_text(token)
        _provision(p, "client", "client", {"HSLAB_TOKEN_IN": "/tmp/hslab-agent-token"})
        _provision(p, "server-again", "server", {})
        yield p
    finally:
        left = mounts_below(base)
        if left:
            # Never delete through a mount: that would reach into the checkout.
            pytest.fail(f"mounts left below {base}: {left}; not deleting it")
        shutil.rmtree(base, ignore_errors=True)


def test_provisioning_stays_within_a_few_minutes(provisioned: Provisioned) -> None:
    total = sum(provisioned.seconds.values())
    print(f"chroot provisioning timings (s): {provisioned.seconds}")  # shown with -s / -rA
    assert total < 600, provisioned.seconds


def test_handshake_lab_is_installed_and_lists_the_labs(provisioned: Provisioned) -> None:
    exe = provisioned.root / "opt/handshake-lab/bin/handshake-lab"
    assert os.access(exe, os.X_OK)
    assert (provisioned.root / "usr/local/bin/handshake-lab").resolve() == exe.resolve() or (
        os.readlink(provisioned.root / "usr/local/bin/handshake-lab")
        == "/opt/handshake-lab/bin/handshake-lab"
    )
    out = run_in_root(provisioned.root, ["/opt/handshake-lab/bin/handshake-lab", "list", "--json"])
    assert out.returncode == 0, out.stderr
    listed = {lab["name"] for lab in json.loads(out.stdout)["labs"]}
    shipped = {path.stem for path in (ROOT / "labs").glob("*.toml")}
    assert shipped, "no lab files in labs/"
    assert shipped <= listed, out.stdout


def test_agent_unit_is_installed_verified_and_enabled(provisioned: Provisioned) -> None:
    unit = provisioned.root / "etc/systemd/system/handshake-lab-agent.service"
    assert unit.read_text() == TEMPLATE.read_text()
    assert "unit verified by systemd-analyze" in provisioned.outputs["server"]
    wants = provisioned.root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "handshake-lab-agent.service").is_symlink()
    env = (provisioned.root / "etc/handshake-lab/agent.env").read_text()
    assert "HSLAB_AGENT_BIND=198.18.1.10\n" in env
    assert "HSLAB_AGENT_PORT=7878\n" in env
    assert "services are installed but not started" in provisioned.outputs["server"]


def test_token_file_is_private_and_kept(provisioned: Provisioned) -> None:
    token = provisioned.root / "etc/handshake-lab/agent-token"
    st = token.stat()
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == 0
    assert len(token.read_text().strip()) >= 32
    assert "agent token generated" in provisioned.outputs["server"]
    assert "agent token installed from the uploaded file" in provisioned.outputs["client"]
    assert "agent token kept" in provisioned.outputs["server-again"]
    assert not (provisioned.root / "tmp/hslab-agent-token").exists(), "upload not removed"
    for output in provisioned.outputs.values():
        assert token.read_text().strip() not in output


def test_second_run_changes_nothing_it_need_not(provisioned: Provisioned) -> None:
    again = provisioned.outputs["server-again"]
    assert "apt packages already installed" in again
    assert "creating venv" not in again


def test_client_helper_is_installed(provisioned: Provisioned) -> None:
    helper = provisioned.root / "usr/local/bin/hslab-peer-run"
    assert os.access(helper, os.X_OK)
    peer = (provisioned.root / "etc/handshake-lab/peer.env").read_text()
    assert "HSLAB_PEER=198.18.1.10:7878\n" in peer
    out = run_in_root(provisioned.root, ["/usr/local/bin/hslab-peer-run"])
    assert out.returncode == 2
    assert "usage: hslab-peer-run LAB" in out.stderr


# ---------------------------------------------------------------------------- agent path


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def _unit_exec_start(root: Path) -> list[str]:
    """ExecStart of the installed unit, ${VARS} expanded from its EnvironmentFile."""
    text = (root / "etc/systemd/system/handshake-lab-agent.service").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    env = _env_file(root / "etc/handshake-lab/agent.env")
    return [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], word)
        for word in shlex.split(line.removeprefix("ExecStart="))
    ]


def _listening(ns: str, address: str) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-Hltn"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return f"{address} " in out.stdout or out.stdout.rstrip().endswith(address)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_client_runs_a_lab_through_the_provisioned_agent(
    provisioned: Provisioned, loop: str, tmp_path: Path
) -> None:
    root = provisioned.root
    # Every checkout has the agent command now: its absence is a failure, never a skip.
    probe = run_in_root(root, ["/opt/handshake-lab/bin/handshake-lab", "agent", "--help"])
    assert probe.returncode == 0, f"handshake-lab agent --help failed:\n{probe.stderr}"

    from handshake_lab.topo.pair import NetnsPair  # noqa: PLC0415 (root-only import path)

    server_ip, port = _env_file(root / "etc/handshake-lab/peer.env")["HSLAB_PEER"].split(":")
    pair = NetnsPair(registry_dir=tmp_path / "registry")
    # The VMs' addresses, so that the provisioned files are used exactly as written.
    pair.server_addr = server_ip
    pair.client_addr = CLIENT_IP
    with pair:
        agent = subprocess.Popen(
            ["ip", "netns", "exec", pair.server_ns, *chroot_argv(root, _unit_exec_start(root))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not _listening(pair.server_ns, f"{server_ip}:{port}"):
                if agent.poll() is not None:
                    output = agent.stdout.read() if agent.stdout else ""
                    pytest.fail(f"the agent exited ({agent.returncode}):\n{output}")
                assert time.monotonic() < deadline, "the agent did not listen within 30 s"
                time.sleep(0.2)
            run = subprocess.run(
                ["ip", "netns", "exec", pair.client_ns,
                 *chroot_argv(root, ["/usr/local/bin/hslab-peer-run", "half-close",
                                     "--loop", loop])],
                capture_output=True, text=True, timeout=180, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        finally:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGTERM)
                try:
                    agent.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(agent.pid, signal.SIGKILL)
                    agent.wait(timeout=10)
            if agent.stdout is not None:
                agent.stdout.close()
