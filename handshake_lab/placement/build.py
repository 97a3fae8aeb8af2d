"""Build the two ends of a lab for a topology, and tear them down afterwards.

``loopback``: both ends in this process on 127.0.0.1, one socket table read once per poll.
``netns``: a server and a client network namespace joined by a veth pair (198.18.0.0/24, see
``topo.pair``); sockets are created inside each namespace and each end's table is read there.
Everything the topology creates is recorded before creation and removed when the ``with`` block
ends, whatever ends it (exception, Ctrl-C, SIGTERM turned into an exception by the CLI). A run
killed with SIGKILL leaves a record that the next run's ``stale_cleanup`` acts on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from handshake_lab.errors import MissingDependencyError
from handshake_lab.net.sides import ClientSide, LocalClients, LocalServer, ServerSide
from handshake_lab.observe.base import Observer
from handshake_lab.observe.scoped import ScopedObserver
from handshake_lab.spec.model import Lab

TOPOLOGIES: tuple[str, ...] = ("loopback", "netns", "netns-agent")
AGENT_READY_TIMEOUT = 10.0


def step_topology(topology: str) -> str:
    """Which of a lab's step sets (``only = ...``) a placement runs: the agent in a namespace
    can hold segments like netns; a remote peer (a VM) cannot, like loopback."""
    return {"netns-agent": "netns", "remote": "loopback"}.get(topology, topology)


LOOPBACK_HOST = "127.0.0.1"

ObserverFactory = Callable[[], list[Observer]]


@dataclass
class Placed:
    """The two ends of a lab; ``server``/``clients`` None means loopback in this process."""

    topology: str
    observers: list[Observer]
    server: ServerSide | None = None
    clients: ClientSide | None = None
    host: str = LOOPBACK_HOST
    details: dict[str, str] = field(default_factory=dict)
    shared_table: bool = False


def fast_observer(netns: str | None) -> Observer | None:
    """The netlink observer for polling (in ``netns``), or None where it cannot work."""
    from handshake_lab.errors import HandshakeLabError  # noqa: PLC0415
    from handshake_lab.observe.netlink import NetlinkObserver  # noqa: PLC0415

    try:
        observer = NetlinkObserver(netns=netns)
        observer.snapshot([])
    except (HandshakeLabError, OSError):
        return None
    return observer


@contextmanager
def placed(
    topology: str,
    lab: Lab,
    make_observers: ObserverFactory,
    *,
    sysctls: Mapping[str, Mapping[str, str | int]] | None = None,
    loop: str = "asyncio",
) -> Iterator[Placed]:
    """Yield the lab's two ends for ``topology``; remove whatever was created on exit."""
    if topology == "loopback":
        observers = make_observers()
        fast = fast_observer(None)
        if fast is None:
            yield Placed("loopback", observers)
            return
        yield Placed(
            "loopback",
            observers,
            server=LocalServer(LOOPBACK_HOST, observers, echo=lab.echo, fast_observers=[fast]),
            clients=LocalClients(LOOPBACK_HOST, lab.clients, observers),
            shared_table=True,
        )
        return
    if topology not in {"netns", "netns-agent"}:
        raise ValueError(f"unknown topology {topology!r}")
    from handshake_lab.topo.caps import netns_capability  # noqa: PLC0415
    from handshake_lab.topo.netns import in_netns  # noqa: PLC0415
    from handshake_lab.topo.pair import NetnsPair  # noqa: PLC0415
    from handshake_lab.topo.registry import stale_cleanup  # noqa: PLC0415

    ok, reason = netns_capability()
    if not ok:
        raise MissingDependencyError(f"--topology netns unavailable: {reason}")
    stale_cleanup()  # leftovers of runs that were SIGKILLed
    sysctls = sysctls if sysctls is not None else lab.sysctls
    pair = NetnsPair(server_sysctls=sysctls.get("server"), client_sysctls=sysctls.get("client"))
    with pair:

        def scope_of(ns: str) -> Callable[[], AbstractContextManager[None]]:
            return lambda: in_netns(ns)

        def scoped(ns: str) -> list[Observer]:
            # psutil reads the main thread's namespace: see observe.scoped.
            return [
                ScopedObserver(inner, scope_of(ns), main_thread=inner.name == "psutil")
                for inner in make_observers()
            ]

        server: ServerSide
        agent: AbstractContextManager[ServerSide] = contextlib.nullcontext(
            LocalServer(
                pair.server_addr,
                scoped(pair.server_ns),
                echo=lab.echo,
                scope=scope_of(pair.server_ns),
                netns=pair.server_ns,
                fast_observers=[f] if (f := fast_observer(pair.server_ns)) else [],
            )
        )
        if topology == "netns-agent":
            agent = agent_in_namespace(pair.server_ns, pair.server_addr, pair.client_ns, lab, loop)
        clients = LocalClients(
            pair.client_addr,
            lab.clients,
            scoped(pair.client_ns),
            scope=scope_of(pair.client_ns),
            netns=pair.client_ns,
            fast_observers=[f] if (f := fast_observer(pair.client_ns)) else [],
        )
        with agent as server:
            yield Placed(
                topology,
                clients.observers,
                server=server,
                clients=clients,
                host=pair.server_addr,
                details={
                    "server_ns": pair.server_ns,
                    "client_ns": pair.client_ns,
                    "client_veth": pair.client_veth,
                    "client_addr": pair.client_addr,
                    "run_id": pair.run_id,
                },
            )


def _die_with_parent() -> None:
    """In the agent child: get SIGTERM if the lab process dies, even by SIGKILL, so no agent
    outlives the run (prctl PR_SET_PDEATHSIG)."""
    import ctypes  # noqa: PLC0415
    import signal  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


@contextmanager
def agent_in_namespace(
    server_ns: str, server_addr: str, client_ns: str, lab: Lab, loop: str
) -> Iterator[ServerSide]:
    """Run ``handshake-lab agent`` inside the server namespace and talk to it from the client
    namespace: the two-machine path, exercised without machines."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from handshake_lab.agent.client import RemoteServer  # noqa: PLC0415
    from handshake_lab.agent.token import generate_token, write_token_file  # noqa: PLC0415
    from handshake_lab.errors import NetworkError  # noqa: PLC0415
    from handshake_lab.topo.netns import in_netns  # noqa: PLC0415

    token = generate_token()
    # The pid in the name ties a leftover (after SIGKILL) to its run, as for namespaces.
    with tempfile.TemporaryDirectory(prefix=f"hslab-agent-{os.getpid()}-") as tmp:
        token_file = Path(tmp) / "token"
        write_token_file(token_file, token)
        argv = [
            sys.executable,
            "-m",
            "handshake_lab.agent",
            "--bind",
            server_addr,
            "--port",
            "0",
            "--netns",
            server_ns,
            "--token-file",
            str(token_file),
            "--loop",
            loop,
        ]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads in the child before exec
            # Its own session: a terminal's SIGHUP/SIGINT/SIGQUIT reaches the run, which stops
            # the agent in order; reaching both, the agent could vanish mid-request first.
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "HSLAB_AGENT_TOKEN"},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on " not in line:
                err = proc.stderr.read() if proc.stderr else ""
                raise NetworkError(f"the agent did not start: {(err or line).strip()[:200]}")
            port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
            yield RemoteServer(
                server_addr,
                port,
                token,
                echo=lab.echo,
                lab_name=lab.name,
                scope=lambda: in_netns(client_ns),
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(AGENT_READY_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
