"""The remote path without VMs: an agent inside the server namespace, the runner and its
clients in the client namespace, labs across the veth (root).

The agent is a separate process (``python -m handshake_lab.agent --netns ...``), so the control
connection, the lab sockets and both observers really are on the other "host".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from handshake_lab.agent.client import RemoteServer
from handshake_lab.agent.protocol import decode_ready
from handshake_lab.agent.token import write_token_file
from handshake_lab.lab.runner import LabRun, RunOptions
from handshake_lab.net.loops import loop_factory
from handshake_lab.net.sides import LocalClients
from handshake_lab.observe.base import Address, Observer
from handshake_lab.observe.defaults import default_observers
from handshake_lab.observe.scoped import ScopedObserver
from handshake_lab.placement import Topology
from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab
from handshake_lab.spec.model import ABSENT, Lab
from handshake_lab.topo.netns import in_netns
from handshake_lab.topo.pair import NetnsPair
from tests.integration.labrun import Recorded
from tests.netns.helpers import raw_states

pytestmark = pytest.mark.root

TOKEN = "5eed" * 16
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def agent_in(pair: NetnsPair, tmp_path: Path, loop: str) -> Iterator[int]:
    """An agent process inside the server namespace; yields its control port."""
    token_file = tmp_path / "agent.token"
    write_token_file(token_file, TOKEN)
    argv = [
        sys.executable, "-m", "handshake_lab.agent", "--bind", pair.server_addr, "--port", "0",
        "--netns", pair.server_ns, "--token-file", str(token_file), "--loop", loop,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert json.loads(line.split(" ", 1)[1])["netns"] == pair.server_ns, line
        yield decode_ready(line)[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10.0) == 0
    finally:
        proc.kill()
        proc.wait(10.0)
        proc.stdout.close()


def client_scope(pair: NetnsPair) -> Callable[[], AbstractContextManager[None]]:
    return lambda: in_netns(pair.client_ns)


def client_side(pair: NetnsPair, lab: Lab) -> LocalClients:
    scope = client_scope(pair)

    observers: list[Observer] = [
        ScopedObserver(o, scope, main_thread=o.name == "psutil") for o in default_observers()
    ]
    return LocalClients(
        pair.client_addr, lab.clients, observers, scope=scope, netns=pair.client_ns
    )


def netns_labs() -> list[str]:
    """The namespace labs an agent can serve: not a dual-stack lab (one address per agent; the
    CLI refuses it there, tests/integration/test_dual_stack_lab.py)."""
    labs = [load_lab(builtin_dir() / f"{name}.toml") for name in builtin_names()]
    return [lab.name for lab in labs if "netns" in lab.topologies and not lab.dual]


@pytest.mark.parametrize("name", netns_labs())
def test_lab_runs_across_the_veth_with_the_server_side_in_an_agent(
    tmp_path: Path, loop_name: str, name: str
) -> None:
    lab = load_lab(builtin_dir() / f"{name}.toml")
    with (
        NetnsPair(
            server_sysctls=lab.sysctls.get("server"),
            client_sysctls=lab.sysctls.get("client"),
            registry_dir=tmp_path / "registry",
        ) as pair,
        agent_in(pair, tmp_path, loop_name) as port,
    ):
        recorded = Recorded()
        server = RemoteServer(
            pair.server_addr,
            port,
            TOKEN,
            echo=lab.echo,
            lab_name=name,
            scope=client_scope(pair),
        )
        runner = LabRun(
            lab,
            RunOptions(loop=loop_name, topology=Topology.NETNS_AGENT),
            [],
            recorded,
            server=server,
            clients=client_side(pair, lab),
        )
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as r:
            r.run(runner.run())
        assert recorded.header.host == pair.server_addr
        for step in lab.steps_for("netns-agent"):
            report = recorded.steps[step.id]
            assert report.mismatches == [], (name, step.id, report.mismatches)
            for side, expected in step.expect.items():
                observed = report.observed[side]
                assert observed.state == (expected.name if expected else ABSENT)
                if expected is not None:
                    assert observed.local is not None
                    assert observed.local.startswith("198.18.0.")
                    assert observed.sources["psutil"] == expected.name, (name, step.id)
        assert recorded.result.passed, name
        # Nothing of the lab is left in the server's namespace but TIME_WAITs, and the
        # request sockets of a lab's SYN flood: the kernel's, not the agent's, dropped at
        # their next SYN-ACK timer now that their listener is closed.
        left = {"TIME-WAIT"}
        if any(step.action == "syn_flood" for step in lab.steps):
            left.add("SYN-RECV")
        for lab_port in recorded.header.ports.values():
            assert raw_states(pair.server_ns, lab_port) <= left


def test_a_hold_in_the_agents_namespace_keeps_a_client_in_syn_sent(
    pair: NetnsPair, tmp_path: Path, loop_name: str
) -> None:
    lab = load_lab(builtin_dir() / "handshake.toml")
    with agent_in(pair, tmp_path, loop_name) as port:
        server = RemoteServer(pair.server_addr, port, TOKEN, scope=client_scope(pair))
        clients = client_side(pair, lab)

        async def scenario() -> tuple[str, int, set[str], str]:
            try:
                lab_port = await server.reserve_port(None, ())
                listened = await server.listen(
                    "main", lab_port, backlog=8, reuse_address=False, accept=True
                )
                assert listened[0] == "ok"
                await server.ns_op(
                    "add_hold", {"id": "syn", "kind": "drop_syn", "port": lab_port, "count": 1}
                )
                target = Address(pair.server_addr, lab_port)
                pending = await clients.connect("client", target, wait=False, timeout=0.05)
                for _ in range(250):  # bounded poll of the hold's nft counter (5 s)
                    held = int(str(await server.ns_op("dropped", {"id": "syn"})))
                    if held >= 1:
                        break
                    await asyncio.sleep(0.02)
                table = await clients.snapshot([lab_port])
                seen = {r.state.name for r in table["ss"] if r.remote is not None}
                await server.ns_op("release_hold", {"id": "syn"})
                done = await clients.clients["client"].wait_connected(5.0)
                return pending, held, seen, done
            finally:
                await clients.close_all()
                await server.close_all()

        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as r:
            pending, held, seen, done = r.run(scenario())
        assert pending == "pending"
        assert held == 1
        assert seen == {"SYN_SENT"}
        assert done == "ok"  # the kernel's SYN retransmit completes the handshake
