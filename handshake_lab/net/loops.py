"""The event loop is configuration: a table of factories used with ``asyncio.Runner``.

No global policy is installed and ``uvloop.install()`` is never called, so the choice of loop
is local to one run and visible in its report.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable

from handshake_lab.errors import MissingDependencyError

LOOP_NAMES: tuple[str, ...] = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a factory for the named loop; raise ``MissingDependencyError`` if unavailable."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional at run time, imported only when chosen
        except ImportError as exc:
            raise MissingDependencyError(
                "uvloop is not installed: pip install uvloop (or use --loop asyncio)"
            ) from exc
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ValueError(f"unknown loop {name!r}; choose one of {', '.join(LOOP_NAMES)}")


def loop_version(name: str) -> str:
    """The version string of the loop implementation, for the run's report."""
    if name == "uvloop":
        try:
            import uvloop  # noqa: PLC0415
        except ImportError:
            return "missing"
        return str(getattr(uvloop, "__version__", "unknown"))
    return f"python {platform.python_version()}"
