"""The ``agent`` command: options in, ``agent.run.serve`` out (see that module)."""

from __future__ import annotations

from pathlib import Path

from handshake_lab.agent.run import serve
from handshake_lab.errors import ExitStatus


def agent_command(
    bind: str, port: int, token_file: Path | None, netns: str | None, debug: bool
) -> ExitStatus:
    return serve(bind, port, token_file, netns, debug)
