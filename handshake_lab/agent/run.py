"""Run the agent in the foreground until SIGTERM or Ctrl-C: the server machine's half of the
two-machine mode (``handshake-lab agent``, ``python -m handshake_lab.agent``).

Once it listens, the agent prints one machine-readable line on stdout
(``protocol.encode_ready``) and a sentence for people on stderr; whoever starts it reads the
first with ``protocol.decode_ready``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path

from handshake_lab.agent.protocol import PROTOCOL_VERSION, encode_ready
from handshake_lab.agent.server import Agent, AgentConfig
from handshake_lab.agent.token import agent_token, check_token
from handshake_lab.errors import (
    ExitStatus,
    HandshakeLabError,
    MissingDependencyError,
    NetworkError,
)
from handshake_lab.net.loops import loop_factory
from handshake_lab.observe.defaults import default_observers, fast_observers
from handshake_lab.signals import TERMINATING
from handshake_lab.topo.netns import netns_path, setns


class AgentUsageError(HandshakeLabError):
    exit_status = ExitStatus.USAGE


def check_bind(bind: str) -> str:
    """The agent binds to one address given on purpose, IPv4 (or IPv6, which the namespace
    agent of ``run --ip 6`` uses): never a wildcard by default."""
    try:
        address = ipaddress.ip_address(bind)
    except ValueError as exc:
        raise AgentUsageError(
            f"--bind {bind!r}: give the IPv4 address of the lab network interface "
            "(for example 192.168.56.10)"
        ) from exc
    if address.is_unspecified:
        raise AgentUsageError(
            f"--bind {bind} would expose the agent on every interface, and clients must "
            "connect to a real address: give the lab network's address"
        )
    return str(address)


def enter_netns_for_good(name: str) -> None:
    """Move this process (its main thread, before any other thread exists) into ``name``.

    Threads and processes started afterwards inherit it, and psutil reads ``/proc/self/net``
    through the main thread: everything the agent does then happens in the namespace.
    """
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


def read_token_fd(fd: int) -> tuple[str, str]:
    """The token a parent process wrote to the pipe ``fd`` (then closed): no file, no argv."""
    try:
        with os.fdopen(fd, "r", encoding="ascii", closefd=True) as pipe:
            raw = pipe.read(256)
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentUsageError(f"--token-fd {fd}: cannot read the token: {exc}") from exc
    return check_token(raw, f"--token-fd {fd}"), "token from the parent process"


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("handshake_lab.agent")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("handshake-lab agent: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def serve(
    bind: str,
    port: int,
    token_file: Path | None,
    netns: str | None,
    debug: bool,
    *,
    token_fd: int | None = None,
    loop: str = "asyncio",
    hello_timeout: float = 5.0,
    line_timeout: float = 10.0,
    idle_timeout: float = 300.0,
) -> ExitStatus:
    """Serve the server side of labs on ``bind:port`` until SIGTERM or Ctrl-C.

    The token comes from ``token_fd`` (a pipe the parent wrote it to: the namespace agent a
    run starts), ``token_file`` or ``HSLAB_AGENT_TOKEN``, or is generated into the token file
    (never from the command line). With ``netns`` the whole agent - control port,
    lab sockets, ss and psutil - lives in that network namespace.
    """
    host = check_bind(bind)
    if not 0 <= port <= 65535:
        raise AgentUsageError(f"--port {port}: must be in 0..65535")
    factory = loop_factory(loop)
    if netns is not None:
        enter_netns_for_good(netns)
    token, origin = read_token_fd(token_fd) if token_fd is not None else agent_token(token_file)
    observers = default_observers(6 if ":" in host else 4)  # the lab's family: the bind's
    fast = fast_observers()  # netlink in the agent's namespace, for the runner's polling
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
    agent = Agent(config, observers, fast)

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
        print(encode_ready(host, agent.port, netns=netns, loop=loop), flush=True)
        sys.stderr.write(
            f"handshake-lab agent: listening on {host}:{agent.port}{where} "
            f"(protocol {PROTOCOL_VERSION}, {loop}); {origin}\n"
        )
        sys.stderr.flush()
        try:
            await stop.wait()
        finally:
            for signum in (*TERMINATING, signal.SIGINT):
                running.remove_signal_handler(signum)
            await agent.close()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    return ExitStatus.OK


__all__ = ["AgentUsageError", "check_bind", "read_token_fd", "serve"]
