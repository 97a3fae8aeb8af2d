"""The dual-stack lab on real sockets: states, addresses, facts, segments, every view, every
number its texts cite.

One run per loop and topology through ``session.execute`` (the path ``run`` takes): loopback
as any user, the namespaces as root. What must hold: the IPv4 client's connection to the
dual-stack listener is ``[::ffff:a.b.c.d]`` on the server's end in ss and psutil alike (and
plain IPv4 on the client's end, on the wire, in the pcap); the same 4-tuple matches the two
ends; the IPv4 bind on the same port fails with EADDRINUSE; with IPV6_V6ONLY on each family
reaches its own listener and the IPv4 client is refused once the IPv4 listener is gone.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from handshake_lab.lab.session import RunRequest, execute
from handshake_lab.placement import Topology
from handshake_lab.record.codec import dumps
from handshake_lab.render.html import render_html
from handshake_lab.render.kernel_text import kernel_text
from handshake_lab.render.table import TableRenderer
from handshake_lab.render.text import make_console
from handshake_lab.spec.loader import builtin_dir, load_lab
from handshake_lab.spec.model import ABSENT, Lab, cited_sysctls
from handshake_lab.topo.pair import CLIENT_ADDR, CLIENT_ADDR6, SERVER_ADDR, SERVER_ADDR6
from tests import needs
from tests.integration.labrun import Recorded
from tests.integration.test_cli import cli

LAB = load_lab(builtin_dir() / "dual-stack.toml")
V4 = {Topology.LOOPBACK: ("127.0.0.1", "127.0.0.1"), Topology.NETNS: (SERVER_ADDR, CLIENT_ADDR)}
V6 = {Topology.LOOPBACK: ("::1", "::1"), Topology.NETNS: (SERVER_ADDR6, CLIENT_ADDR6)}
NUMBER = re.compile(r"(?<![\w.+=-])\d+(?:\.\d+)?(?![\w.-])")  # as tests/netns/test_held_labs
CITED = {"4291", "2.5.5.2"}  # RFC 4291, section 2.5.5.2: a citation, not a figure of the run
MAPPED_END = re.compile(r"\[::ffff:[\d.]+\]:\d+")
QUIET = ("listen-dual", "listen-v4-too", "listen-v6only", "listen-v4", "unlisten-v4")
"""The steps whose texts say "Nothing crosses the wire"."""


def run(topology: Topology, loop: str) -> Recorded:
    recorded = Recorded()
    execute(RunRequest(lab=LAB, topology=topology, loop=loop), recorded)
    return recorded


def numbers_named(lab: Lab, steps: list[str], kernel: dict[str, str | None]) -> set[str]:
    """The numbers of the intro and the steps' texts, en and zh; a {sysctl:...} figure is the
    run's own (checked present), so not counted."""
    texts = [lab.intro.en, lab.intro.zh] if lab.intro else []
    texts += [t for s in lab.steps if s.id in steps for t in (s.explain.en, s.explain.zh)]
    for key in cited_sysctls(texts):
        assert kernel.get(key) is not None, key
    blank = dict.fromkeys(kernel, "")
    return {n for t in texts for n in NUMBER.findall(kernel_text(t, blank, "en"))}


def check_run(recorded: Recorded, topology: Topology) -> None:
    (s4, c4), (s6, c6) = V4[topology], V6[topology]
    header, steps = recorded.header, recorded.steps
    assert header.host == f"{s4} {s6}"
    assert list(steps) == [s.id for s in LAB.steps]
    for step in LAB.steps:
        report = steps[step.id]
        assert report.mismatches == [], (step.id, report.mismatches)
        for side, expected in step.expect.items():
            observed = report.observed[side]
            assert observed.state == (expected.name if expected else ABSENT), (step.id, side)
            if expected is not None:
                assert observed.agree, (step.id, side, observed.note)
                assert observed.sources["psutil"] == expected.name, (step.id, side)
    assert recorded.result.passed
    ports = header.ports
    main, split = ports["main"], ports["split"]
    assert (ports["v4"], ports["split4"]) == (main, split)  # same_port_as: one port each
    assert main != split

    # Step 1: one IPv6 socket on ::, IPV6_V6ONLY off (read back), seen as the v6 wildcard.
    listener = steps["listen-dual"].observed["listener"]
    assert (listener.local, listener.remote, listener.mapped) == (f"[::]:{main}", None, False)
    assert steps["listen-dual"].facts == {"so_reuseaddr": 0, "v6only": 0}

    # Step 2: the IPv4 client. Its end is plain IPv4; the server's end is the same 4-tuple,
    # mapped, as ss and psutil both printed it.
    v4 = steps["connect-v4"].observed
    client, server = v4["client"], v4["server"]
    assert client.local is not None
    assert client.local.startswith(f"{c4}:")
    assert (client.remote, client.mapped) == (f"{s4}:{main}", False)
    assert (server.local, server.remote) == (client.remote, client.local)
    assert server.mapped
    assert server.sources == {"ss": "ESTAB", "psutil": "ESTABLISHED"}
    mapped = f"[::ffff:{s4}]:{main} > [::ffff:{c4}]:{client.local.rsplit(':', 1)[1]}"
    assert server.tuple_text() == mapped
    assert client.tuple_text() == f"{client.local} > {s4}:{main}"

    # Step 3: the IPv6 client on the same listener: plain IPv6, nothing mapped.
    v6 = steps["connect-v6"].observed
    assert v6["client6"].local is not None
    assert v6["client6"].local.startswith(f"[{c6}]:")
    assert v6["client6"].remote == f"[{s6}]:{main}"
    assert v6["server.client6"].local == f"[{s6}]:{main}"
    assert not v6["server.client6"].mapped

    # Step 4: 0.0.0.0 on the dual-stack listener's port: EADDRINUSE, no socket.
    assert steps["listen-v4-too"].outcome == "EADDRINUSE"
    assert steps["listen-v4-too"].facts == {}

    # Steps 5-8: IPV6_V6ONLY on, one listener per family on one port; each family's client
    # reaches its own (the server's end of the IPv4 connection is an IPv4 socket now).
    assert steps["listen-v6only"].facts == {"so_reuseaddr": 0, "v6only": 1}
    split_listeners = steps["listen-v4"].observed
    assert split_listeners["listener.split"].local == f"[::]:{split}"
    assert split_listeners["listener.split4"].local == f"0.0.0.0:{split}"
    assert steps["listen-v4"].facts == {"so_reuseaddr": 0}  # an IPv4 socket has no V6ONLY
    four = steps["connect-split4"].observed["server.split4"]
    assert four.local == f"{s4}:{split}"
    assert not four.mapped
    assert four.tuple_text() is not None
    assert "ffff" not in four.tuple_text()  # type: ignore[operator]
    six = steps["connect-split6"].observed["server.split6"]
    assert six.local == f"[{s6}]:{split}"

    # Steps 9-10: the IPv4 listener gone, its connection stays; an IPv4 client is refused.
    assert steps["unlisten-v4"].observed["server.split4"].state == "ESTABLISHED"
    assert steps["refused"].outcome == "ECONNREFUSED"

    # The wire: IPv4 segments for the IPv4 client (no ::ffff: there), IPv6 for the IPv6 one,
    # a RST,ACK for the refused SYN, nothing in the steps that only bind or close listeners.
    if header.evidence.get("capture", "off") != "off":
        for sid in QUIET:
            assert steps[sid].segments == [], sid
        wire4 = steps["connect-v4"].segments
        assert [s["flags"] for s in wire4] == ["SYN", "SYN,ACK", "ACK"]
        for segment in wire4:
            assert {segment["src"], segment["dst"]} == {client.local, f"{s4}:{main}"}
            assert {segment["from"], segment["to"]} == {"client", "server"}
        wire6 = steps["connect-v6"].segments
        assert [s["flags"] for s in wire6] == ["SYN", "SYN,ACK", "ACK"]
        assert all(s["src"].startswith("[") and s["dst"].startswith("[") for s in wire6)
        assert {(s["from"], s["to"]) for s in wire6} == {
            ("client6", "server"),
            ("server", "client6"),
        }
        refused = steps["refused"].segments
        # (The refused socket is closed before its port is known by name: its end may be
        # shown by address.)
        assert [(s["to"], s["flags"]) for s in refused] == [
            ("server", "SYN"),
            (refused[0]["from"], "RST,ACK"),
        ]
        assert all(s["src"].startswith(s4) or s["src"].startswith(c4) for s in refused)
        # The wire checks after the steps: four handshakes right, the fifth SYN refused.
        wire_checks = recorded.result.checks
        assert all(c["ok"] for c in wire_checks), [c for c in wire_checks if not c["ok"]]
        names = [c["name"] for c in wire_checks]
        assert names.count("handshake.ack_ack") == 4
        assert names.count("handshake.refused") == 1

    # Every view prints the mapped end as ss does and matches it by its IPv4 tuple.
    record = recorded.record()
    for lang in ("en", "zh"):
        stream = io.StringIO()
        TableRenderer(make_console(stream=stream, width=120), lang).render(record)
        table = stream.getvalue()
        assert f"{mapped}\n" in table
        # Both ends of every mapped row, and no other 4-tuple: the texts' [::ffff:a.b.c.d]
        # have no port.
        assert len(MAPPED_END.findall(table)) == 2 * sum(
            1 for r in recorded.steps.values() for o in r.observed.values() if o.mapped
        )
        page = render_html(record, lang)
        assert mapped.replace(">", "&gt;") in page
    line = dumps(steps["connect-v4"], "en")
    assert json.loads(line)["observed"]["server"]["mapped"] is True
    assert recorded.audit() == []  # grade finds the record consistent

    # Every number the texts name holds in this run.
    named = numbers_named(LAB, list(steps), header.kernel)
    checks = {
        "0": steps["listen-dual"].facts["v6only"] == 0,
        "1": steps["listen-v6only"].facts["v6only"] == 1
        and str(v6["server.client6"].local).startswith(
            "[::1]:" if topology is Topology.LOOPBACK else f"[{SERVER_ADDR6}]:"
        ),
    }
    assert named - CITED == set(checks), sorted(named - CITED)
    assert all(checks.values()), checks


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_dual_stack_lab_on_loopback(loop: str) -> None:
    check_run(run(Topology.LOOPBACK, loop), Topology.LOOPBACK)


@pytest.mark.root
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_dual_stack_lab_in_namespaces_with_both_families_on_the_veth(loop: str) -> None:
    check_run(run(Topology.NETNS, loop), Topology.NETNS)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, env={**os.environ, "COLUMNS": "100"}, timeout=120)


def test_the_agent_placements_are_refused_before_step_1() -> None:
    done = _cli("run", "dual-stack", "--topology", "netns-agent")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "handshake-lab: lab dual-stack uses IPv4 and IPv6 together, which an agent's server "
        "(one address) cannot: it runs with --topology loopback or netns, not --topology "
        "netns-agent"
    )
    assert "Step 1" not in done.stdout


@pytest.mark.root
def test_the_pcap_carries_ipv4_for_the_mapped_connection(tmp_path: Path) -> None:
    """On the wire there is no ::ffff: at all: the mapped form exists in the socket API only.
    tshark reads the run's pcap: the dual-stack listener's port has IPv4 and IPv6 segments."""
    tshark = needs.tool("tshark")
    pcap, saved = tmp_path / "dual.pcap", tmp_path / "dual.jsonl"
    done = _cli("run", "dual-stack", "--pcap", str(pcap), "--save", str(saved))
    assert done.returncode == 0, done.stderr
    assert "[::ffff:127.0.0.1]:" in done.stdout
    header = json.loads(saved.read_text(encoding="utf-8").splitlines()[0])
    main = header["ports"]["main"]
    fields = ["-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "tcp.dstport"]
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=,", *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split(",") for line in out.splitlines()]
    on_main = [r for r in rows if str(main) in (r[2], r[3])]
    assert {r[0] for r in on_main if r[0]} == {"127.0.0.1"}
    assert {r[1] for r in on_main if r[1]} == {"::1"}
    assert len(on_main) == 6  # two handshakes of three segments on that port
    assert "ffff" not in out


def test_watch_prints_a_mapped_end_as_ss_does() -> None:
    """Any program's dual-stack listener: ``watch`` shows its IPv4 client's connection as ss
    prints it, the server's end [::ffff:127.0.0.1], the client's end plain."""
    with socket.socket(socket.AF_INET6) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = listener.accept()
            with accepted:
                done = _cli("watch", "--port", str(port), "--once", "--json")
                cport = client.getsockname()[1]
                mine = f"127.0.0.1:{cport}"
    assert done.returncode == 0, done.stderr
    sockets = {
        (doc["local"], doc["remote"], doc["state"])
        for doc in map(json.loads, done.stdout.splitlines())
        if doc.get("event") == "socket"
        and (doc["local"].endswith(f":{port}") or doc["local"] == mine)
    }
    assert sockets == {
        (f"[::]:{port}", None, "LISTEN"),
        (mine, f"127.0.0.1:{port}", "ESTABLISHED"),
        (f"[::ffff:127.0.0.1]:{port}", f"[::ffff:127.0.0.1]:{cport}", "ESTABLISHED"),
    }, done.stdout
