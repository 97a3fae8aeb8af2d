"""The ``agent`` command and the ``run --peer`` placement: the two-machine mode.

``agent_command`` runs the agent in the foreground on the server machine (or inside a lab
namespace) until SIGTERM or Ctrl-C. ``remote_sides`` builds the two ends of a lab whose server
side is carried out by that agent, after checking the agent answers and accepts the token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path

from handshake_lab.agent.client import (
    DEFAULT_AGENT_PORT,
    RemoteServer,
    parse_peer,
    probe_agent,
)
from handshake_lab.agent.protocol import PROTOCOL_VERSION
from handshake_lab.agent.server import Agent, AgentConfig
from handshake_lab.agent.token import agent_token
from handshake_lab.cli.signals import TERMINATING
from handshake_lab.errors import (
    ExitStatus,
    HandshakeLabError,
    MissingDependencyError,
    NetworkError,
)
from handshake_lab.net.loops import loop_factory
from handshake_lab.net.sides import LocalClients
from handshake_lab.spec.model import Lab


class AgentUsageError(HandshakeLabError):
    exit_status = ExitStatus.USAGE


def check_bind(bind: str) -> str:
    """The agent binds to one IPv4 address given on purpose: never a wildcard by default."""
    try:
        address = ipaddress.IPv4Address(bind)
    except ValueError as exc:
        raise AgentUsageError(
            f"--bind {bind!r}: give the IPv4 address of the lab network interface "
            "(for example 192.168.56.10)"
        ) from exc
    if address.is_unspecified:
        raise AgentUsageError(
            "--bind 0.0.0.0 would expose the agent on every interface, and clients must "
            "connect to a real address: give the lab network's address"
        )
    return str(address)


def enter_netns_for_good(name: str) -> None:
    """Move this process (its main thread, before any other thread exists) into ``name``.

    Threads and processes started afterwards inherit it, and psutil reads ``/proc/self/net``
    through the main thread: everything the agent does then happens in the namespace.
    """
    from handshake_lab.topo.netns import netns_path, setns  # noqa: PLC0415

    try:
        fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except ValueError as exc:
        raise AgentUsageError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise NetworkError(f"no network namespace named {name}") from exc
    except PermissionError as exc:
        raise MissingDependencyError(f"cannot open namespace {name}: needs root") from exc
    try:
        setns(fd)
    except PermissionError as exc:
        raise MissingDependencyError(
            f"cannot enter network namespace {name}: needs root (CAP_SYS_ADMIN)"
        ) from exc
    except OSError as exc:
        raise NetworkError(f"cannot enter network namespace {name}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("handshake_lab.agent")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("handshake-lab agent: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def agent_command(
    bind: str,
    port: int,
    token_file: Path | None,
    netns: str | None,
    debug: bool,
    *,
    loop: str = "asyncio",
    hello_timeout: float = 5.0,
    line_timeout: float = 10.0,
    idle_timeout: float = 300.0,
) -> ExitStatus:
    """Serve the server side of labs on ``bind:port`` until SIGTERM or Ctrl-C.

    The token comes from ``token_file`` or ``HSLAB_AGENT_TOKEN``, or is generated into the
    token file (never from the command line). With ``netns`` the whole agent - control port,
    lab sockets, ss and psutil - lives in that network namespace.
    """
    from handshake_lab.cli.runlab import default_observers  # noqa: PLC0415
    from handshake_lab.placement.build import fast_observer  # noqa: PLC0415

    host = check_bind(bind)
    if not 0 <= port <= 65535:
        raise AgentUsageError(f"--port {port}: must be in 0..65535")
    factory = loop_factory(loop)
    if netns is not None:
        enter_netns_for_good(netns)
    token, origin = agent_token(token_file)
    observers = default_observers()
    fast = fast_observer(None)  # netlink in the agent's namespace, for the runner's polling
    _configure_logging(debug)
    config = AgentConfig(
        host=host,
        port=port,
        token=token,
        netns=netns,
        hello_timeout=hello_timeout,
        line_timeout=line_timeout,
        idle_timeout=idle_timeout,
    )
    agent = Agent(config, observers, [fast] if fast is not None else [])

    async def main() -> None:
        running = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (*TERMINATING, signal.SIGINT):
            running.add_signal_handler(signum, stop.set)
        try:
            await agent.start()
        except OSError as exc:
            raise NetworkError(
                f"agent cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        where = f" in netns {netns}" if netns else ""
        print(
            f"handshake-lab agent: listening on {host}:{agent.port}{where} "
            f"(protocol {PROTOCOL_VERSION}, {loop}); {origin}",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            for signum in (*TERMINATING, signal.SIGINT):
                running.remove_signal_handler(signum)
            await agent.close()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    return ExitStatus.OK


def remote_sides(peer: str, token: str, lab: Lab) -> tuple[RemoteServer, LocalClients]:
    """The server side at the agent ``peer`` (HOST[:PORT]), the clients here.

    Checks first (blocking, a few ms) that the agent answers and accepts ``token``, so a wrong
    token or an unreachable agent fails before anything is created. The clients' states are
    read on this machine, the server's on the agent's.
    """
    from handshake_lab.cli.runlab import default_observers  # noqa: PLC0415
    from handshake_lab.placement.build import fast_observer  # noqa: PLC0415

    host, port = parse_peer(peer, DEFAULT_AGENT_PORT)
    info, local_addr = probe_agent(host, port, token)
    lab_host = info.get("host")
    names = info.get("observers")
    server = RemoteServer(
        host,
        port,
        token,
        echo=lab.echo,
        lab_name=lab.name,
        lab_host=lab_host if isinstance(lab_host, str) else None,
        observers=[str(n) for n in names] if isinstance(names, list) else None,
    )
    fast = fast_observer(None)
    clients = LocalClients(
        local_addr,
        lab.clients,
        default_observers(),
        fast_observers=[fast] if fast is not None else [],
    )
    return server, clients


__all__ = ["DEFAULT_AGENT_PORT", "AgentUsageError", "agent_command", "remote_sides"]
