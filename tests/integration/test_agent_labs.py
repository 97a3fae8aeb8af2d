"""Labs whose server side is carried out by an agent, on loopback, on asyncio and uvloop.

The same lab through ``RemoteServer`` must observe the same states as a local run. Also: the
agent vanishing mid-lab is a ``NetworkError`` (exit code 7) after local cleanup, and a client
vanishing mid-lab makes the agent release that session's sockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handshake_lab.agent.client import RemoteServer
from handshake_lab.agent.protocol import decode_ready
from handshake_lab.agent.token import write_token_file
from handshake_lab.errors import ExitStatus, NetworkError
from handshake_lab.lab.runner import LabRun, Pause, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.net.sides import LocalClients
from handshake_lab.observe.base import Address
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.ss import SsObserver
from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab
from handshake_lab.spec.model import ABSENT, Lab, Step
from tests.integration.agent_support import HOST, TOKEN, poll_until, running_agent
from tests.integration.labrun import Recorded, run_lab

REPO = Path(__file__).resolve().parents[2]


def remote_run(lab: Lab, loop: str, agent_port: int, pause: Pause | None = None) -> Recorded:
    recorded = Recorded()
    server = RemoteServer(HOST, agent_port, TOKEN, echo=lab.echo, lab_name=lab.name)
    clients = LocalClients(HOST, lab.clients, [SsObserver(), PsutilObserver()])
    runner = LabRun(
        lab,
        RunOptions(loop=loop),
        [],
        recorded,
        pause,
        server=server,
        clients=clients,
    )
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        r.run(runner.run())
    return recorded


def states(recorded: Recorded, lab: Lab) -> dict[str, dict[str, str]]:
    """Per step, the state of each side the lab expects (what the lab is about)."""
    return {
        step.id: {side: recorded.steps[step.id].observed[side].state for side in step.expect}
        for step in lab.steps_for("loopback")
    }


def loopback_labs() -> list[str]:
    """The loopback labs an agent can serve: not a dual-stack lab (one address per agent)."""
    labs = [load_lab(builtin_dir() / f"{name}.toml") for name in builtin_names()]
    return [lab.name for lab in labs if "loopback" in lab.topologies and not lab.dual]


@pytest.mark.parametrize("name", loopback_labs())
def test_lab_through_the_agent_observes_what_a_local_run_observes(
    name: str, loop_name: str
) -> None:
    lab = load_lab(builtin_dir() / f"{name}.toml")
    local = run_lab(lab, loop_name)
    with running_agent(loop_name) as agent:
        remote = remote_run(lab, loop_name, agent.port)
        poll_until(
            lambda: agent.call(lambda: agent.agent.stats.ended["bye"]) == 1,
            what="the session to end with bye",
        )
    assert states(remote, lab) == states(local, lab)
    for step in lab.steps_for("loopback"):
        report = remote.steps[step.id]
        assert report.mismatches == [], (step.id, report.mismatches)
        for side, expected in step.expect.items():
            observed = report.observed[side]
            assert observed.state == (expected.name if expected else ABSENT)
            if expected is not None:
                assert set(observed.sources) == {"ss", "psutil"}, (step.id, side)
    assert remote.result.passed
    assert remote.header.host == HOST
    assert remote.header.observers == ["ss", "psutil"]


def start_agent_process(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    token_file = tmp_path / "agent.token"
    write_token_file(token_file, TOKEN)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "handshake_lab.agent",
            "--bind",
            HOST,
            "--port",
            "0",
            "--token-file",
            str(token_file),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the agent prints it or exits (EOF)
    _, port = decode_ready(line)
    return proc, port


def stop_agent_process(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10.0)
    if proc.stdout is not None:
        proc.stdout.close()


def sockets_on(port: int) -> set[str]:
    return {r.raw_state for r in SsObserver().snapshot([port])}


def test_agent_vanishing_mid_lab_is_a_network_error_after_local_cleanup(
    tmp_path: Path, loop_name: str
) -> None:
    lab = load_lab(builtin_dir() / "half-close.toml")
    proc, port = start_agent_process(tmp_path)
    ports: list[int] = []
    try:

        async def kill_agent_before_fin(step: Step) -> None:
            if step.id == "client-fin":
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10.0)

        recorded = Recorded()

        def keep(event: object) -> None:
            recorded(event)  # type: ignore[arg-type]
            if len(recorded.events) == 1:
                ports.extend(recorded.header.ports.values())

        server = RemoteServer(HOST, port, TOKEN, echo=lab.echo)
        clients = LocalClients(HOST, lab.clients, [SsObserver(), PsutilObserver()])
        runner = LabRun(
            lab,
            RunOptions(loop=loop_name),
            [],
            keep,
            kill_agent_before_fin,
            server=server,
            clients=clients,
        )
        with (
            asyncio.Runner(loop_factory=loop_factory(loop_name)) as r,
            pytest.raises(NetworkError) as caught,
        ):
            r.run(runner.run())
    finally:
        stop_agent_process(proc)
    error = caught.value
    assert error.exit_status == ExitStatus.NETWORK_ERROR
    assert int(error.exit_status) == 7
    message = str(error)
    assert "\n" not in message
    assert f"agent {HOST}:{port}" in message
    # Local cleanup ran: our client aborted (RST, no TIME_WAIT); the dead agent's sockets
    # went with its process.
    lab_port = ports[0]
    poll_until(
        lambda: not (sockets_on(lab_port) & {"ESTAB", "LISTEN", "FIN-WAIT-2", "CLOSE-WAIT"}),
        what=f"no live socket on {lab_port}",
    )


def test_unreachable_agent_is_a_clear_network_error(loop_name: str) -> None:
    lab = load_lab(builtin_dir() / "handshake.toml")
    with running_agent(loop_name) as agent:
        dead_port = agent.port
    with pytest.raises(
        NetworkError, match=f"cannot reach agent {HOST}:{dead_port}: connection refused"
    ):
        remote_run(lab, loop_name, dead_port)


def test_wrong_token_is_a_clear_network_error(loop_name: str) -> None:
    lab = load_lab(builtin_dir() / "handshake.toml")
    with running_agent(loop_name) as agent:
        server = RemoteServer(HOST, agent.port, "f" * 64)

        async def go() -> None:
            await server.reserve_port(None, ())

        with (
            pytest.raises(NetworkError, match=r"wrong token.*HSLAB_AGENT_TOKEN"),
            asyncio.Runner(loop_factory=loop_factory(loop_name)) as r,
        ):
            r.run(go())
        assert lab.name  # the agent still serves: a proper run works
        assert remote_run(lab, loop_name, agent.port).result.passed


def test_client_vanishing_mid_lab_makes_the_agent_release_its_sockets(loop_name: str) -> None:
    with running_agent(loop_name) as agent:
        server = RemoteServer(HOST, agent.port, TOKEN)

        async def half_a_lab() -> int:
            port = await server.reserve_port(None, ())
            outcome, _ = await server.listen(
                "main", port, backlog=8, reuse_address=False, accept=True
            )
            assert outcome == "ok"
            reader, writer = await asyncio.open_connection(HOST, port)
            local = Address(HOST, writer.get_extra_info("sockname")[1])
            assert await server.stream_action(local, "send", "hi", 2.0) == ("ok", None, {})
            assert await reader.readexactly(2) == b"hi"
            # The runner's process dies: its control connection is reset, nothing is sent.
            assert server._writer is not None
            server._writer.transport.abort()
            writer.transport.abort()
            return port

        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as r:
            lab_port = r.run(half_a_lab())
        poll_until(lambda: "LISTEN" not in sockets_on(lab_port), what="the listener released")
        poll_until(
            lambda: agent.call(lambda: agent.agent.stats.active) == 0,
            what="the session ended",
        )
        assert sockets_on(lab_port) <= {"TIME-WAIT"}
        # ... and the agent serves the next lab.
        lab = load_lab(builtin_dir() / "reset.toml")
        assert remote_run(lab, loop_name, agent.port).result.passed


def test_agent_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, port = start_agent_process(tmp_path)
    try:
        lab = load_lab(builtin_dir() / "close.toml")
        assert remote_run(lab, "asyncio", port).result.passed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10.0) == 0
    finally:
        stop_agent_process(proc)
