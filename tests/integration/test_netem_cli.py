"""``--delay``/``--loss`` and ``sweep`` as a user meets them: real processes, exit codes, one
line, nothing left behind; the sweep's page in a real headless Chromium.

Where the kernel has netem (the lab VMs: ``make vm-check`` runs the sweep there) the delay
tests check the RTT the kernel measured; where it has none (this project's CI machine, whose
kernel is built without CONFIG_NET_SCH_NETEM) they check the refusal before step 1, exit 13.
Which of the two applies is asked of the kernel (``topo.netem.probe``), as the tool does.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.record.codec import read_run
from handshake_lab.record.sweep import sweep_point
from handshake_lab.render.sweep import sweep_html
from handshake_lab.topo import netem
from handshake_lab.topo.caps import user_namespaces_work
from handshake_lab.topo.registry import list_netns
from tests import needs
from tests.browser import chromium, console_problems, file_url
from tests.integration.test_userns_cli import userns_env

CLI = [sys.executable, "-m", "handshake_lab"]
RUN = Path(__file__).parents[1] / "unit" / "data" / "runs" / "handshake.netns.delay-0ms.jsonl"


def cli(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI; also return its pid (our namespaces carry it: ``hslab-<pid>-...``)."""
    with subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def netns_of(pid: int) -> list[str]:
    return [name for name in list_netns() if name.startswith(f"hslab-{pid}-")]


@pytest.fixture(scope="module")
def netem_missing() -> str | None:
    """Why this kernel has no netem (the tool's own probe), or None where it has it."""
    return netem.probe()


@pytest.mark.parametrize("command", ["run", "play"])
def test_a_delay_on_loopback_is_refused_before_anything_runs(command: str) -> None:
    args = ["run", "handshake"] if command == "run" else ["play"]
    proc, _ = cli(*args, "--delay", "50", "--json")
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    assert one_line(proc) == (
        "handshake-lab: --delay/--loss need --topology netns: they slow the lab's own veth "
        "pair, never this machine's lo"
    )
    assert proc.stdout == ""


def test_a_delay_with_peer_is_refused() -> None:
    proc, _ = cli("run", "half-close", "--peer", "198.18.1.10", "--loss", "1")
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    assert "--delay/--loss cannot run with --peer" in one_line(proc)


def test_a_sweep_of_a_netns_only_lab_on_loopback_is_refused() -> None:
    proc, _ = cli("sweep", "lost-last-ack", "--delay", "0", "--topology", "loopback")
    assert proc.returncode == ExitStatus.USAGE, proc.stderr
    assert "cannot run with --topology loopback" in one_line(proc)


@pytest.mark.root
@pytest.mark.parametrize("command", ["run", "play", "sweep"])
def test_without_netem_a_delay_is_refused_before_step_1_with_exit_13(
    command: str, netem_missing: str | None
) -> None:
    if netem_missing is None:
        pytest.skip("this kernel has netem: test_with_netem_* check the delay itself")
    args = {
        "run": ["run", "handshake", "--topology", "netns", "--delay", "50", "--json"],
        "play": ["play", "--topology", "netns", "--delay", "50", "--json"],
        "sweep": ["sweep", "handshake", "--delay", "0,50", "--json"],
    }[command]
    proc, pid = cli(*args)
    assert proc.returncode == ExitStatus.NETEM_UNAVAILABLE, proc.stderr
    line = one_line(proc)
    assert line.startswith("handshake-lab: --delay/--loss need tc netem, which this kernel lacks")
    assert proc.stdout == "", "refused before the lab started: no event, not even the 0 ms run"
    assert netns_of(pid) == []


@pytest.mark.root
@pytest.mark.slow
def test_with_netem_the_kernel_measures_the_rtt_set(
    tmp_path: Path, netem_missing: str | None
) -> None:
    if netem_missing is not None:
        pytest.skip(f"no netem here ({netem_missing}); the VMs run this (make vm-check)")
    save = tmp_path / "run.jsonl"
    proc, pid = cli(
        "run", "half-close", "--topology", "netns", "--delay", "40", "--save", str(save)
    )
    assert proc.returncode == ExitStatus.OK, proc.stderr
    record = read_run(save)
    assert record.started.link == {"rtt_ms": 40.0, "loss_pct": 0.0}
    srtt = [s.tcp_info["client"]["rtt_ms"] for s in record.steps if "client" in s.tcp_info]
    assert srtt
    assert all(rtt >= 40 for rtt in srtt if rtt > 0)
    assert netns_of(pid) == []


@pytest.mark.root
@pytest.mark.slow
def test_a_sweep_at_0_ms_runs_here_and_prints_json_csv_and_a_table(tmp_path: Path) -> None:
    """0 ms needs no netem: the sweep itself runs on any kernel, its figures from the run."""
    proc, pid = cli("sweep", "handshake", "--delay", "0", "--json", "--save-dir", str(tmp_path))
    assert proc.returncode == ExitStatus.OK, proc.stderr
    assert re.fullmatch(
        r"handshake-lab sweep: handshake at \+0 ms RTT: kernel agreed \(\d+\.\d s\)\n",
        proc.stderr,
    )
    doc = json.loads(proc.stdout)
    (run,) = doc["runs"]
    client = next(s for s in run["states"] if (s["side"], s["state"]) == ("client", "SYN_SENT"))
    assert client["duration_ms"] > 900
    assert 0 < client["answer_ms"] < 5
    assert run["measured"]["client"]["rto_ms"] >= 200
    saved = read_run(tmp_path / "handshake.delay-0ms.jsonl")
    assert sweep_point(saved).as_dict() == run, "the JSON is the saved run's reading"
    assert netns_of(pid) == []


def test_doctor_says_whether_netem_is_there_and_what_that_means(
    netem_missing: str | None,
) -> None:
    for lang, missing_words, ok_words in (
        ("en", "are refused before step 1 (exit 13)", "--delay and --loss add round-trip time"),
        ("zh", "被拒绝（退出码 13）", "会在实验的网络命名空间之间加上往返时延"),
    ):
        proc, _ = cli("doctor", "--lang", lang)
        assert proc.returncode == ExitStatus.OK, proc.stderr
        text = " ".join(proc.stdout.split())
        line = text[text.index("netem ") :]
        if netem_missing is None:
            assert line.startswith("netem available" if lang == "en" else "netem 可用")
            assert ok_words.replace(" ", "") in line.replace(" ", "")
        else:
            assert re.search(r"(^|\s)--\s+netem ", proc.stdout), proc.stdout
            assert missing_words.replace(" ", "") in line.replace(" ", "")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_the_sweep_page_draws_its_plots_with_no_console_problem(
    tmp_path: Path, browser: Any
) -> None:
    point = sweep_point(read_run(RUN))
    # Three real readings of the same run placed at three RTTs: the page, not the kernel,
    # is under test here (the VM check sweeps a real netem wire).
    points = [point, *(dataclasses.replace(point, rtt_ms=rtt) for rtt in (50.0, 200.0))]
    page = tmp_path / "sweep.html"
    page.write_text(sweep_html(points, "zh"), encoding="utf-8")
    browser.get_log("browser")
    browser.get(file_url(page))
    assert console_problems(browser) == []
    plots = browser.find_elements("css selector", "svg.plot")
    assert len(plots) == 2
    for plot in plots:
        assert plot.size["width"] > 300
        assert plot.size["height"] > 100
    lines = browser.find_elements("css selector", "svg.plot polyline.series")
    assert lines, "one line per state stay across the three RTTs"
    assert all(line.size["width"] > 50 for line in lines)
    assert "附加 RTT" in browser.find_element("css selector", "h1").text


@pytest.mark.slow
def test_the_handshake_text_quotes_the_rtt_the_client_measured_in_this_run(
    tmp_path: Path,
) -> None:
    """{rtt:client} is filled from the step's own tcp_info: in --json, the table and HTML."""
    save, page = tmp_path / "run.jsonl", tmp_path / "run.html"
    proc, _ = cli("run", "handshake", "--save", str(save), "--html", str(page), "--lang", "en")
    assert proc.returncode == ExitStatus.OK, proc.stderr
    step = next(s for s in read_run(save).steps if s.id == "accept")
    rtt = step.tcp_info["client"]["rtt_ms"]
    assert rtt > 0
    quoted = f"measured that RTT as {rtt:.1f} ms"
    assert quoted in " ".join(step.explanation["en"].split())
    assert quoted in " ".join(proc.stdout.split())
    assert quoted in " ".join(page.read_text(encoding="utf-8").split())
    assert "{rtt:" not in proc.stdout + save.read_text(encoding="utf-8")


def test_the_users_path_refuses_or_delays_in_its_private_namespace(
    netem_missing: str | None,
) -> None:
    """Without root (as root: HANDSHAKE_LAB_USERNS=1) the run reruns in a user namespace;
    netem is asked before that rerun, so a refusal is still one line, exit 13."""
    works, detail = user_namespaces_work()
    needs.require(works, f"no unprivileged user namespaces here: {detail}")
    proc = subprocess.run(
        [*CLI, "run", "half-close", "--topology", "netns", "--delay", "30", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=userns_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if netem_missing is not None:
        assert proc.returncode == ExitStatus.NETEM_UNAVAILABLE, proc.stderr
        assert "this kernel lacks" in one_line(proc)
        assert proc.stdout == ""
    else:
        assert proc.returncode == ExitStatus.OK, proc.stderr
        lab = json.loads(proc.stdout.splitlines()[0])
        assert lab["link"] == {"rtt_ms": 30.0, "loss_pct": 0.0}
