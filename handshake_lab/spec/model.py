"""Labs as data: frozen dataclasses, and the catalogue of actions a lab step may use.

A lab is a list of steps. Each step names an actor (``server``, one of the lab's clients, or
``lab`` for a step that only observes), an action from ``ACTIONS`` with its arguments, the
states it expects the kernel to report for each *side*, and an explanation in English and
Chinese. The runner (``lab.runner``) is the only interpreter of these records.

Sides are the sockets a lab can name in ``expect``:

* ``listener`` - the listening socket on the ``main`` port slot; ``listener.SLOT`` for another.
* a client's name (``client``, ``filler``, ...) - that client's socket.
* ``server`` - the server's end of the ``client`` connection; ``server.NAME`` for client NAME.

A side expected ``ABSENT`` must not be in the kernel's table at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from handshake_lab.i18n.lang import pick
from handshake_lab.tcp.states import TcpState

SCHEMA_VERSION = 1
ABSENT = "ABSENT"
DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 300.0
MAIN_PORT = "main"
STREAM_ACTIONS: tuple[str, ...] = (
    "send",
    "recv",
    "send_eof",
    "close",
    "abort",
    "stop_reading",
    "read_all",
    "fill",
    "linger",
    "queues",
    "keepalive",
    "user_timeout",
)
"""The actions on one connection, done by whichever end a step names (runner and agent)."""
MAX_LINGER = 60
"""The longest SO_LINGER time a lab may set: a lingering close() blocks that long."""
MAX_KEEPALIVE = 3600
"""The longest keepalive idle time or interval a lab may set (seconds)."""
MAX_USER_TIMEOUT = 600_000
"""The longest TCP_USER_TIMEOUT a lab may set (milliseconds)."""
MAX_SYN_FLOOD = 256
"""The most raw SYNs one ``syn_flood`` step may send: enough to overflow any backlog a lab
sets (the listen backlog is at most 4096, but a lab that wants a full queue listens small),
few enough that the SYN-ACKs they draw stay readable in the capture."""


SYSCTL_PLACEHOLDER = re.compile(r"\{sysctl:(net(?:\.[a-z0-9_]+){2,})\}")
"""``{sysctl:net.ipv4.tcp_fin_timeout}`` in a text: the value the running kernel has, filled in
when the text is drawn (``render.kernel_text``), so no explanation quotes another kernel."""
RTT_PLACEHOLDER = re.compile(r"\{rtt:([a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)?)\}")
"""``{rtt:client}`` in a step's text: the smoothed RTT the kernel measured for that side's
socket right after the step (the run record's ``tcp_info``), filled in when the text is drawn;
"not measured" where the step has none (no sample yet, an agent's end)."""
KERNEL_FIGURES: tuple[str, ...] = (
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_rto_min_us",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_orphan_retries",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_rfc1337",
    "net.ipv6.bindv6only",
    "net.ipv4.tcp_invalid_ratelimit",
    "net.ipv4.tcp_challenge_ack_limit",
)
"""The timer sysctls every run records (``LabStarted.kernel``), whether or not its texts cite
them: a grader can see what the student's kernel used. Also tcp_timestamps, not a timer but
what decides which options a connection keeps (a SYN cookie keeps window scaling and SACK
only through timestamps: the syn-flood lab turns them off in its client's namespace), and
net.ipv6.bindv6only: whether an IPv6 listener on :: takes IPv4 clients by default (the
dual-stack lab); and the challenge-ACK rate limits (the rst-validation lab)."""


def cited_sysctls(texts: Iterable[str]) -> list[str]:
    """The sysctls the placeholders in ``texts`` name, in order, each once."""
    seen: dict[str, None] = {}
    for text in texts:
        for match in SYSCTL_PLACEHOLDER.finditer(text):
            seen.setdefault(match.group(1))
    return list(seen)


def type_name(value: object, *, mapping: str = "an object") -> str:
    """How an error message names a value's type: "an integer", "a string", ... (``mapping``
    names a dict: a TOML file calls it a table, JSON an object)."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: mapping,
        type(None): "null",
    }.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class Text:
    """A text in each language. ``zh`` may fall back to ``en`` in user-written labs."""

    en: str
    zh: str

    def get(self, lang: str) -> str:
        """The text in ``lang`` (the one fallback rule of ``i18n.lang.pick``)."""
        return self.zh if pick(lang) == "zh" else self.en

    def as_dict(self) -> dict[str, str]:
        """Every language's text: what a language-neutral record keeps."""
        return {"en": self.en, "zh": self.zh}


# A side's expected state: a TcpState, or None for ABSENT.
Expected = TcpState | None
ArgValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument of an action: accepted Python types, default, and allowed string values."""

    types: tuple[type, ...]
    default: ArgValue | None
    choices: tuple[ArgValue, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False
    help: str = ""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    actors: frozenset[str]  # "server", "client" (any client), "lab"
    args: Mapping[str, ArgSpec]
    help: str


_CONN = ArgSpec(
    (str,), "client", help="server only: which client's connection (its name); default client"
)
_PORT = ArgSpec(
    (str,), MAIN_PORT, help="port slot name; 'main' is --port, any other name gets a free port"
)

BIND_CHOICES: tuple[str, ...] = ("server", "::", "0.0.0.0")
"""A listener's address: the server's own (127.0.0.1, ::1, 198.18.0.1...: the run's IP
version), or the IPv6 or IPv4 wildcard (a lab of both families, ``ip = "dual"``)."""
IP_FAMILIES: tuple[int, ...] = (4, 6)
LAB_IP: tuple[str, ...] = ("any", "dual")
"""A lab's ``ip``: ``any`` (its sockets are all of the run's IP version, ``--ip``) or ``dual``
(each listen and connect names its family; ``--ip`` means nothing to it and is refused)."""
DUAL_STACK = 46
"""The IP "version" of a run of an ``ip = "dual"`` lab: both families at once (127.0.0.1 and
::1; in namespaces 198.18.0.x and 2001:db8:198:18::x), every observer reading both."""
DUAL_ONLY_ARGS: Mapping[str, str] = {"connect": "family"}
"""Arguments a lab may give only with ``ip = "dual"`` (a socket of the other family would be
invisible to a one-family run's observers): and there they are required."""
NOT_DUAL_ACTIONS = frozenset({"churn", "self_connect", "stale_syn"})
"""Actions that use the run's one server or client address, so have no place in a dual lab."""

ACTIONS: Mapping[str, ActionSpec] = {
    "listen": ActionSpec(
        frozenset({"server"}),
        {
            "port": _PORT,
            "backlog": ArgSpec((int,), 16, minimum=0, maximum=4096, help="listen() backlog"),
            "reuse_address": ArgSpec(
                (bool, str),
                False,
                choices=(True, False, "default"),
                help="SO_REUSEADDR on the listener; 'default' lets asyncio/uvloop decide",
            ),
            "accept": ArgSpec(
                (bool,), True, help="serve (accept) at once; false keeps the accept queue full"
            ),
            "bind": ArgSpec(
                (str,),
                None,  # "server"; not filled in, so the records of other labs stay as they were
                choices=BIND_CHOICES,
                help="the address to bind: the server's own, or a wildcard (ip = 'dual' labs)",
            ),
            "v6only": ArgSpec(
                (bool, str),
                None,  # "default"
                choices=(True, False, "default"),
                help="IPV6_V6ONLY on a bind = '::' listener; 'default': net.ipv6.bindv6only",
            ),
            "same_port_as": ArgSpec(
                (str,),
                None,
                help="bind the port of this other slot: a second listener on one port",
            ),
        },
        "open a listening socket",
    ),
    "accept": ActionSpec(
        frozenset({"server"}),
        {"port": _PORT},
        "start accepting on a listener opened with accept=false",
    ),
    "unlisten": ActionSpec(
        frozenset({"server"}), {"port": _PORT}, "close the listening socket (not its connections)"
    ),
    "connect": ActionSpec(
        frozenset({"client"}),
        {
            "port": _PORT,
            "wait": ArgSpec(
                (bool,), True, help="wait for the handshake; false returns while in SYN_SENT"
            ),
            "retry": ArgSpec(
                (bool,),
                False,
                help="retry every 50 ms while connect() fails (EADDRNOTAVAIL...), up to timeout",
            ),
            "family": ArgSpec(
                (int,),
                None,
                choices=IP_FAMILIES,
                help="4 or 6: an IPv4 or IPv6 socket to the server's address of that family "
                "(ip = 'dual' labs only, where it is required)",
            ),
        },
        "connect to the server (127.0.0.1 on the port slot)",
    ),
    "send": ActionSpec(
        frozenset({"server", "client"}),
        {"data": ArgSpec((str,), None, required=True, help="text to send (UTF-8)"), "conn": _CONN},
        "send data",
    ),
    "recv": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "wait for data, EOF or an error from the peer, and show it",
    ),
    "send_eof": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "half-close: shutdown(SHUT_WR), a FIN; the socket can still receive",
    ),
    "close": ActionSpec(
        frozenset({"server", "client"}), {"conn": _CONN}, "close the socket (FIN)"
    ),
    "abort": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "abortive close: SO_LINGER {on, 0}, the kernel sends RST",
    ),
    "stop_reading": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "stop reading: what arrives from now on stays unread in the kernel's receive queue",
    ),
    "read_all": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "read again, everything, until EOF or an error (or timeout); fact bytes: how many",
    ),
    "fill": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "write until the kernel would block (peer's window and own send buffer full); "
        "facts sent, send_q",
    ),
    "linger": ActionSpec(
        frozenset({"server", "client"}),
        {
            "seconds": ArgSpec(
                (int,),
                None,
                minimum=0,
                maximum=MAX_LINGER,
                required=True,
                help="SO_LINGER {on, seconds}; 0 makes close() an abort (RST)",
            ),
            "conn": _CONN,
        },
        "set SO_LINGER {on, seconds}: a later close() waits up to that long for unsent data",
    ),
    "queues": ActionSpec(
        frozenset({"server", "client"}),
        {"conn": _CONN},
        "read the socket's queues into facts: recv_q (unread bytes), send_q (unacknowledged)",
    ),
    "keepalive": ActionSpec(
        frozenset({"server", "client"}),
        {
            "idle": ArgSpec(
                (int,),
                None,
                minimum=1,
                maximum=MAX_KEEPALIVE,
                required=True,
                help="TCP_KEEPIDLE: seconds of silence before the first probe",
            ),
            "interval": ArgSpec(
                (int,),
                None,
                minimum=1,
                maximum=MAX_KEEPALIVE,
                required=True,
                help="TCP_KEEPINTVL: seconds between unanswered probes",
            ),
            "count": ArgSpec(
                (int,),
                None,
                minimum=1,
                maximum=127,
                required=True,
                help="TCP_KEEPCNT: unanswered probes before the kernel gives up",
            ),
            "conn": _CONN,
        },
        "SO_KEEPALIVE on, with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT",
    ),
    "user_timeout": ActionSpec(
        frozenset({"server", "client"}),
        {
            "ms": ArgSpec(
                (int,),
                None,
                minimum=0,
                maximum=MAX_USER_TIMEOUT,
                required=True,
                help="TCP_USER_TIMEOUT in milliseconds (0: the kernel's default)",
            ),
            "conn": _CONN,
        },
        "TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the kernel gives up",
    ),
    "observe": ActionSpec(
        frozenset({"lab"}), {}, "do nothing; wait (up to timeout) for the expected states"
    ),
    "sysctl": ActionSpec(
        frozenset({"server", "client"}),
        {
            "key": ArgSpec((str,), None, required=True, help="e.g. net.ipv4.tcp_tw_reuse"),
            "value": ArgSpec((str, int), None, required=True, help="the new value"),
        },
        "set a sysctl inside this side's namespace (netns topology only)",
    ),
    "counters": ActionSpec(
        frozenset({"server", "client"}),
        {},
        "read this side's TCP counters (/proc/net/netstat, snmp) into facts",
    ),
    "churn": ActionSpec(
        frozenset({"client"}),
        {
            "port": _PORT,
            "count": ArgSpec((int,), 10, minimum=1, maximum=5000, help="connections to make"),
        },
        "connect and close (client first) COUNT times; each leaves a TIME_WAIT",
    ),
    "self_connect": ActionSpec(
        frozenset({"client"}),
        {
            "port": ArgSpec(
                (str,), "self", help="port slot to bind and connect to (a free port by default)"
            )
        },
        "bind a socket and connect it to its own address: a simultaneous open",
    ),
    "close_both": ActionSpec(
        frozenset({"lab"}),
        {"conn": _CONN},
        "close a client's socket and the server's end of its connection in the same instant "
        "(one event-loop turn): both FINs leave together; needs both ends in this process",
    ),
    "stale_syn": ActionSpec(
        frozenset({"client"}),
        {
            "port": _PORT,
            "seq": ArgSpec((int,), None, minimum=0, maximum=2**32 - 1, help="its sequence number"),
        },
        "send a raw SYN no socket owns (an old duplicate); netns topology only",
    ),
    "reconnect": ActionSpec(
        frozenset({"client"}),
        {"port": _PORT},
        "connect again from the address and port of this client's last (closed) connection: "
        "a new SYN for the same 4-tuple",
    ),
    "old_syn": ActionSpec(
        frozenset({"client"}),
        {},
        "send a late copy of the SYN that opened this client's last connection (as the "
        "server's listener saved it), from the client's address and port; netns-local only",
    ),
    "syn_flood": ActionSpec(
        frozenset({"client"}),
        {
            "port": _PORT,
            "count": ArgSpec(
                (int,), 10, minimum=1, maximum=MAX_SYN_FLOOD, help="how many SYNs to send"
            ),
        },
        "send COUNT raw SYNs, each from its own port that no socket owns (a SYN flood); "
        "facts sent, syn_recv; netns topology only",
    ),
    "forge": ActionSpec(
        frozenset({"client"}),
        {
            "flags": ArgSpec((str,), "RST", choices=("RST", "SYN"), help="the segment's flags"),
            "offset": ArgSpec(
                (int,),
                0,
                minimum=-(2**31),
                maximum=2**31 - 1,
                help="its sequence number minus the server's RCV.NXT (0: exactly RCV.NXT)",
            ),
            "count": ArgSpec((int,), 1, minimum=1, maximum=10, help="copies sent back to back"),
        },
        "send a raw segment with this client's 4-tuple, as if from it; its sequence number "
        "is the server's RCV.NXT (read from the wire) plus offset; netns topology only",
    ),
}

HOLD_KINDS: tuple[str, ...] = (
    "drop_syn",
    "drop_synack",
    "drop_pure_ack",
    "drop_fin",
    "drop_ack_of_fin",
    "hold_fin",
    "drop_rst",
    "drop_all",
)
TOPOLOGIES: tuple[str, ...] = ("loopback", "netns")
NETNS_ONLY_ACTIONS = frozenset({"sysctl", "stale_syn", "syn_flood", "forge", "old_syn"})
ONE_PROCESS_ACTIONS = frozenset({"close_both", "old_syn"})
"""Actions that touch both ends at one instant: only where both live in this process."""

STEP_SETS: Mapping[str, str] = {
    "loopback": "loopback",
    "netns": "netns",
    "netns-agent": "netns",
}
"""The step set each placement runs (``placement.Topology.step_set``), and the lab topology
it belongs to: ``netns`` has both ends in this process (``--topology netns``), ``netns-agent``
has the server run by an agent (``--topology netns-agent``, ``--peer`` between lab VMs)."""

ONLY: Mapping[str, frozenset[str]] = {
    "loopback": frozenset({"loopback"}),
    "netns": frozenset({"netns", "netns-agent"}),
    "netns-local": frozenset({"netns"}),
    "netns-agent": frozenset({"netns-agent"}),
}
"""A step's ``only`` value and the step sets it runs in: ``netns`` in every namespace
placement, ``netns-local`` only where both ends are in this process, ``netns-agent`` only where
an agent runs the server (a lab gives the two their own steps where they must differ)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """An nftables drop installed in one side's namespace before the step's action."""

    id: str
    kind: str
    at: str  # "server" or "client": whose input (or output) hook
    port: str = MAIN_PORT  # port slot the rule filters on
    count: int | None = None  # drop only the first COUNT matches; None: until released
    hook: str = "input"


LEVELS: Mapping[int, Text] = {
    1: Text("basics", "基础"),
    2: Text("teardown details", "挥手细节"),
    3: Text("corner cases", "边角情况"),
}
"""The course levels a lab's ``[course] level`` names, in course order."""
PRIVILEGES: tuple[str, ...] = ("none", "userns", "root")
"""What a lab needs to show everything it teaches: ``none`` (loopback, any user), ``userns``
(namespaces: root, or a private user namespace without root), ``root`` (real root: part of
the lesson is in the transition stream, which needs tracefs)."""
COURSE_KEYS = frozenset({"level", "order", "duration", "privileges", "states"})


@dataclass(frozen=True, slots=True)
class Course:
    """Where a lab sits in the course: what ``handshake-lab list`` shows. Built-in labs all
    declare one (a test); a user's lab may."""

    level: int
    order: int
    duration: Mapping[str, int]  # whole seconds per topology, measured and rounded up
    privileges: str
    states: tuple[TcpState, ...]  # the states the steps expect (the loader checks)


# Outcomes a step may expect. Errno names are also accepted (checked by the loader).
OUTCOMES: tuple[str, ...] = ("ok", "pending", "data", "EOF")


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    id: str
    actor: str
    action: str
    args: Mapping[str, ArgValue]
    expect: Mapping[str, Expected]
    explain: Text
    outcome: str | None = None
    data: str | None = None
    facts: Mapping[str, ArgValue] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    stay: float = 0.0  # once matched, the states must stay matched this many seconds
    holds: tuple[Hold, ...] = ()
    release: tuple[str, ...] = ()
    only: str | None = None  # run this step only in these step sets (``ONLY``)

    @property
    def explain_key(self) -> str:
        return f"step.{self.id}"


@dataclass(frozen=True, slots=True)
class Lab:
    name: str
    title: Text
    summary: Text
    clients: tuple[str, ...]
    ports: tuple[str, ...]
    echo: bool
    steps: tuple[Step, ...]
    path: Path
    intro: Text | None = None
    topologies: tuple[str, ...] = TOPOLOGIES
    sysctls: Mapping[str, Mapping[str, str | int]] = field(default_factory=dict)
    course: Course | None = None
    ip: str = "any"  # LAB_IP: "dual" labs name each socket's family themselves

    @property
    def dual(self) -> bool:
        """Both IP families in every run (``ip = "dual"``): ``--ip`` does not apply."""
        return self.ip == "dual"

    def port_aliases(self) -> dict[str, str]:
        """Slot -> the slot whose port it binds too (``listen``'s ``same_port_as``)."""
        return {
            str(s.args.get("port", MAIN_PORT)): str(s.args["same_port_as"])
            for s in self.steps
            if s.action == "listen" and "same_port_as" in s.args
        }

    def texts(self) -> list[str]:
        """Every text of the lab, in every language (intro, then each step's explanation)."""
        out = [self.title.en, self.title.zh, self.summary.en, self.summary.zh]
        if self.intro is not None:
            out += [self.intro.en, self.intro.zh]
        for step in self.steps:
            out += [step.explain.en, step.explain.zh]
        return out

    def steps_for(self, step_set: str) -> tuple[Step, ...]:
        """The steps that run in ``step_set`` (``STEP_SETS``): those without ``only`` and those
        whose ``only`` includes it."""
        if step_set not in STEP_SETS:
            raise ValueError(f"unknown step set {step_set!r}")
        return tuple(s for s in self.steps if s.only is None or step_set in ONLY[s.only])

    def sides(self) -> tuple[str, ...]:
        """Every side name this lab may expect, in display order."""
        names = ["listener"] + [f"listener.{p}" for p in self.ports if p != MAIN_PORT]
        for client in self.clients:
            names.append(client)
            names.append(server_side(client))
        return tuple(names)


def server_side(client: str) -> str:
    """The side name of the server's end of ``client``'s connection."""
    return "server" if client == "client" else f"server.{client}"


def listener_side(slot: str) -> str:
    return "listener" if slot == MAIN_PORT else f"listener.{slot}"
