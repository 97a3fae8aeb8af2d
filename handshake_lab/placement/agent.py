"""``netns-agent``: the server side run by ``python -m handshake_lab.agent`` inside the server
namespace, driven from the client namespace: the two-machine path, exercised without machines.

The child gets the token through an inherited pipe (``--token-fd``): no file to leave behind
if this process is killed, nothing in argv. It announces itself with the protocol's ready line
(``agent.protocol.decode_ready``). It gets SIGTERM if this process dies, even by SIGKILL
(prctl PR_SET_PDEATHSIG), so no agent outlives the run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from handshake_lab.agent.client import RemoteServer
from handshake_lab.agent.protocol import ProtocolError, decode_ready
from handshake_lab.agent.token import TOKEN_ENV, generate_token
from handshake_lab.errors import NetworkError
from handshake_lab.net.sides import ServerSide
from handshake_lab.spec.model import Lab
from handshake_lab.topo.netns import in_netns

AGENT_STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the agent child, before exec: SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@contextmanager
def agent_in_namespace(
    server_ns: str, server_addr: str, client_ns: str, lab: Lab, loop: str
) -> Iterator[ServerSide]:
    token = generate_token()
    read_end, write_end = os.pipe()
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
        "--token-fd",
        str(read_end),
        "--loop",
        loop,
    ]
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            pass_fds=(read_end,),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads in the child before exec
            # Its own session: a terminal's SIGHUP/SIGINT/SIGQUIT reaches the run, which stops
            # the agent in order; reaching both, the agent could vanish mid-request first.
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != TOKEN_ENV},
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    try:
        try:
            with os.fdopen(write_end, "w", encoding="ascii") as pipe:
                pipe.write(token + "\n")
        except BrokenPipeError:
            pass  # the child is gone already: its stderr says why, below
        assert proc.stdout is not None
        line = proc.stdout.readline()
        try:
            _, port = decode_ready(line)
        except ProtocolError as exc:
            err = proc.stderr.read() if proc.stderr else ""
            raise NetworkError(f"the agent did not start: {(err or line).strip()[:200]}") from exc
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
                proc.wait(AGENT_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
