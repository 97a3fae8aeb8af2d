"""The ``ss`` backend: run ``ss -tanoH`` and parse its text.

Why ``ss``: it ships with every Linux (iproute2), works for unprivileged users (timers
included) and filters by port inside the kernel, so a snapshot costs a few milliseconds however
busy the host is. ``ss`` has no JSON output, so the text is parsed here, strictly: a line that
does not look like ``ss`` 6.1 output raises ``ObserverError`` naming the line rather than
yielding a state the kernel never reported.

Spawning (``SsObserver``) and parsing (``parse_ss``, pure) are kept apart so the parser is
tested on captured output (``tests/unit/data/ss/``).

Format of one ``ss -tanoH`` line (no header)::

    STATE  RECV-Q  SEND-Q  LOCAL  PEER  [timer:(NAME,DURATION,COUNT)]

Addresses are ``127.0.0.1:P``, ``[::1]:P``, ``[::ffff:127.0.0.1]:P`` (normalised to
``127.0.0.1``), ``127.0.0.1%lo:P`` (socket bound to a device; the suffix is dropped), and ``*``
for the IPv6 any-address of a dual-stack socket (normalised to ``::``). A peer of ``*:*``,
``0.0.0.0:*`` or ``[::]:*`` means "no peer" (a listener): ``remote`` is ``None``.

Timer durations come from iproute2's ``print_ms_timer`` and are quirky (measured on this
machine, ss 6.1; see ``parse_duration``): ``59sec``, ``1min29sec``, ``119min``, ``9sec``,
``8.944ms`` (8.944 SECONDS: seconds below 10 are printed ``<s>.<ms>`` followed by ``ms``),
``244ms`` (0.244 s) and an empty field at zero. Newer iproute2 prints ``8.944sec`` for the
third form; both are accepted.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Collection, Sequence

from handshake_lab import tools
from handshake_lab.errors import ObserverError
from handshake_lab.observe.aliases import UnknownStateError, address, to_state
from handshake_lab.observe.base import Address, SocketRecord, Timer, port_matches
from handshake_lab.signals import raise_if_interrupted

SOURCE = "ss"
SS_ARGS: tuple[str, ...] = ("-tanoH",)
"""TCP, all states, numeric, timers (``-o``), no header."""

MISSING_SS = "ss not found: install iproute2 (Debian/Ubuntu: apt install iproute2)"
MISSING_IP = "ip not found: install iproute2 (Debian/Ubuntu: apt install iproute2)"

TIMER_NAMES = frozenset({"off", "on", "keepalive", "timewait", "persist", "unknown"})
"""iproute2's ``tmr_name`` table (``off`` is never printed: ss omits the timer then)."""

_TIMER = re.compile(r"timer:\((?P<name>[a-z]+),(?P<duration>[0-9a-z.]*),(?P<count>\d+)\)")

# print_ms_timer: minutes zero the milliseconds, >9 minutes also zero the seconds, >9 seconds
# zero the milliseconds; milliseconds are always three digits.
_DURATIONS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?P<min>\d+)min(?:(?P<sec>\d+)sec)?"),
    re.compile(r"(?P<sec>\d+)sec"),
    re.compile(r"(?P<sec>\d+)\.(?P<ms>\d{3})(?:ms|sec)"),
    re.compile(r"(?P<ms>\d{3})ms"),
)

_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::"})


def parse_duration(text: str) -> float:
    """Seconds left in an ``ss`` timer field (``"8.944ms"`` -> 8.944, ``""`` -> 0.0).

    Raises ``ValueError`` for text ``ss`` does not print.
    """
    if text == "":
        return 0.0
    for pattern in _DURATIONS:
        match = pattern.fullmatch(text)
        if match is not None:
            parts = match.groupdict()
            total_ms = (
                int(parts.get("min") or 0) * 60_000
                + int(parts.get("sec") or 0) * 1000
                + int(parts.get("ms") or 0)
            )
            return total_ms / 1000
    raise ValueError(f"unexpected timer duration {text!r}")


def parse_timer(text: str) -> Timer:
    """``"timer:(timewait,8.944ms,0)"`` -> ``Timer("timewait", 8.944, 0)``.

    Raises ``ValueError`` for anything else.
    """
    match = _TIMER.fullmatch(text)
    if match is None:
        raise ValueError(f"unexpected option {text!r}")
    name = match["name"]
    if name not in TIMER_NAMES:
        raise ValueError(f"unknown timer name {name!r}")
    return Timer(name=name, remaining=parse_duration(match["duration"]), count=int(match["count"]))


def _split_endpoint(text: str) -> tuple[str, str]:
    """``HOST[%IFACE]:PORT`` -> (host without brackets or suffix, port text)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"no HOST:PORT in {text!r}")
    if host.startswith("["):
        close = host.find("]")
        suffix = host[close + 1 :]
        if close == -1 or (suffix and not suffix.startswith("%")):
            raise ValueError(f"bad bracketed host in {text!r}")
        return host[1:close], port_text
    host = host.partition("%")[0]
    if ":" in host:
        raise ValueError(f"unbracketed IPv6 host in {text!r}")
    return host, port_text


def parse_address(text: str) -> Address:
    """A local ``HOST[%IFACE]:PORT`` column. Raises ``ValueError`` for anything else."""
    host, port_text = _split_endpoint(text)
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"bad port in {text!r}")
    if host == "*":
        # ss prints the IPv6 any-address of a dual-stack (not v6only) socket as "*".
        host = "::"
    return address(host, int(port_text))


def parse_peer(text: str) -> Address | None:
    """A peer column; ``None`` for the wildcard peer of a listener (``*:*``, ``[::]:*``)."""
    host, port_text = _split_endpoint(text)
    if port_text == "*" and host in _WILDCARD_HOSTS:
        return None
    return parse_address(text)


def parse_line(line: str) -> SocketRecord:
    """One line of ``ss -tanoH``; ``ObserverError`` (naming the line) if it is not one."""
    fields = line.split()
    if len(fields) < 5:
        raise ObserverError(f"cannot parse ss output line {line!r}: expected 5 or more columns")
    raw_state, recv_q, send_q, local_text, peer_text, *options = fields
    state = to_state(SOURCE, raw_state, context=f"ss output line {line!r}")
    try:
        local = parse_address(local_text)
        remote = parse_peer(peer_text)
        if not (recv_q.isascii() and recv_q.isdigit() and send_q.isascii() and send_q.isdigit()):
            raise ValueError("Recv-Q and Send-Q must be numbers")
        timer: Timer | None = None
        for option in options:
            if timer is not None:
                raise ValueError(f"unexpected option {option!r}")
            timer = parse_timer(option)
    except ValueError as error:
        raise ObserverError(f"cannot parse ss output line {line!r}: {error}") from error
    return SocketRecord(
        source=SOURCE,
        state=state,
        raw_state=raw_state,
        local=local,
        remote=remote,
        timer=timer,
        recv_q=int(recv_q),
        send_q=int(send_q),
    )


def parse_ss(text: str) -> list[SocketRecord]:
    """Parse the output of ``ss -tanoH``. Pure: no process, no clock.

    Blank lines are skipped; any other line that is not a TCP socket line raises
    ``ObserverError`` (``UnknownStateError`` for an unknown state) naming the line.
    """
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def port_filter(ports: Collection[int]) -> str:
    """The ``ss`` filter expression matching ``ports`` as source or destination port."""
    if not ports:
        raise ValueError("port_filter needs at least one port")
    terms: list[str] = []
    for port in sorted(set(ports)):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range 1..65535")
        terms.append(f"sport = :{port} or dport = :{port}")
    return "( " + " or ".join(terms) + " )"


def ss_command(
    ports: Collection[int] | None = None,
    *,
    binary: str = "ss",
    netns: str | None = None,
    ipv4_only: bool = False,
    ipv6_only: bool = False,
) -> list[str]:
    """The argv that lists TCP sockets on ``ports`` (all if None), optionally in a netns;
    ``ipv4_only``/``ipv6_only`` add ``-4``/``-6`` (half the table to read)."""
    family = ["-4"] if ipv4_only else ["-6"] if ipv6_only else []
    argv = [tools.command(binary), *SS_ARGS, *family]
    if ports is not None:
        argv.append(port_filter(ports))
    if netns is not None:
        argv = [tools.command("ip"), "netns", "exec", netns, *argv]
    return argv


class SsObserver:
    """Read the socket table by running ``ss -tanoH`` with a kernel-side port filter."""

    name = "ss"

    def __init__(
        self,
        *,
        binary: str = "ss",
        netns: str | None = None,
        timeout: float = 5.0,
        ipv4_only: bool = False,
        ipv6_only: bool = False,
    ) -> None:
        self.binary = binary
        self.netns = netns
        self.timeout = timeout
        self.ipv4_only = ipv4_only
        self.ipv6_only = ipv6_only

    def snapshot(self, ports: Collection[int] | None = None) -> list[SocketRecord]:
        if ports is not None and not ports:
            return []
        text = self._run(
            ss_command(
                ports,
                binary=self.binary,
                netns=self.netns,
                ipv4_only=self.ipv4_only,
                ipv6_only=self.ipv6_only,
            )
        )
        # The kernel filter already applied; this keeps the Protocol's promise if it did not.
        return [record for record in parse_ss(text) if port_matches(record, ports)]

    def _run(self, argv: Sequence[str]) -> str:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError as error:
            raise ObserverError(MISSING_IP if self.netns is not None else MISSING_SS) from error
        except subprocess.TimeoutExpired as error:
            raise ObserverError(f"ss did not answer within {self.timeout:g} s") from error
        except OSError as error:
            raise ObserverError(f"cannot run {argv[0]}: {error.strerror or error}") from error
        if done.returncode != 0:
            raise_if_interrupted(done.returncode, "ss")
            lines = done.stderr.strip().splitlines()
            detail = lines[0] if lines else "no error message"
            raise ObserverError(f"ss failed (exit {done.returncode}): {detail}")
        return done.stdout


__all__ = [
    "MISSING_SS",
    "SsObserver",
    "UnknownStateError",
    "parse_address",
    "parse_duration",
    "parse_line",
    "parse_peer",
    "parse_ss",
    "parse_timer",
    "port_filter",
    "ss_command",
]
