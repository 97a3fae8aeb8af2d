"""Soak the agent with bad sessions and print its RSS and open descriptors before and after.

Not run by the tests (``tests/integration/test_agent_fuzz.py`` runs 2000 sessions); this runs
10 000 by default::

    .venv/bin/python bench/agent_soak.py [--sessions 10000] [--loop uvloop]

The agent runs in this process on its own thread and loop, so the figures are this process's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.agent_support import poll_until, running_agent
from tests.integration.test_agent_fuzz import BAD_SESSIONS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    me = psutil.Process()
    with running_agent(args.loop, hello_timeout=2.0, line_timeout=2.0) as agent:

        def settled() -> bool:
            return agent.call(lambda: agent.agent.stats.active) == 0

        def run(count: int) -> None:
            for i in range(count):
                BAD_SESSIONS[i % len(BAD_SESSIONS)](agent.port)
            poll_until(settled, timeout=30.0, what="sessions to end")

        run(args.warmup)
        fds0, rss0 = me.num_fds(), me.memory_info().rss
        started = time.monotonic()
        run(args.sessions)
        elapsed = time.monotonic() - started
        fds1, rss1 = me.num_fds(), me.memory_info().rss
        ended = agent.call(lambda: dict(agent.agent.stats.ended))
    print(f"loop {args.loop}: {args.sessions} bad sessions in {elapsed:.1f} s")
    print(f"open fds  before {fds0:6d}  after {fds1:6d}  delta {fds1 - fds0:+d}")
    print(
        f"RSS MiB   before {rss0 / 2**20:6.1f}  after {rss1 / 2**20:6.1f}  "
        f"delta {(rss1 - rss0) / 2**20:+.1f}"
    )
    print("ended:", ", ".join(f"{k}={v}" for k, v in sorted(ended.items())))
    return 0 if fds1 <= fds0 and rss1 - rss0 < 16 * 2**20 else 1


if __name__ == "__main__":
    sys.exit(main())
