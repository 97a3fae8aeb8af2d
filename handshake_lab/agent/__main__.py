"""``python -m handshake_lab.agent``: the agent without the Typer CLI (tests, netns, scripts).

Same behaviour as ``handshake-lab agent``; a few extra options shorten the timeouts for tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handshake_lab.agent.run import serve
from handshake_lab.errors import HandshakeLabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshake_lab.agent")
    parser.add_argument("--bind", required=True, help="IPv4 (or IPv6) address of the lab network")
    parser.add_argument("--port", type=int, default=7878, help="control port (0: any)")
    parser.add_argument("--token-file", type=Path, default=None)
    parser.add_argument(
        "--token-fd", type=int, default=None, help="read the token from this inherited pipe"
    )
    parser.add_argument("--netns", default=None, help="run inside this network namespace")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--hello-timeout", type=float, default=5.0)
    parser.add_argument("--line-timeout", type=float, default=10.0)
    parser.add_argument("--idle-timeout", type=float, default=300.0)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        status = serve(
            args.bind,
            args.port,
            args.token_file,
            args.netns,
            args.debug,
            token_fd=args.token_fd,
            loop=args.loop,
            hello_timeout=args.hello_timeout,
            line_timeout=args.line_timeout,
            idle_timeout=args.idle_timeout,
        )
    except HandshakeLabError as exc:
        sys.stderr.write(f"handshake-lab agent: {exc}\n")
        return int(exc.exit_status)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
