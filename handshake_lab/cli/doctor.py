"""``doctor``: what this machine offers and what each missing piece costs; ``--cleanup``.

Checks change nothing on the machine. ``--cleanup`` removes only kernel objects whose names
carry this tool's prefix (``hslab-`` namespaces, ``hslab-`` trace instances) and that no live
run owns; ``--dry-run`` lists them instead. Anything without the prefix is never touched.
"""

from __future__ import annotations

import os

import psutil
import typer

from handshake_lab import tools
from handshake_lab.errors import ExitStatus, HandshakeLabError
from handshake_lab.i18n.doctor import doctor_text
from handshake_lab.i18n.netem import netem_label
from handshake_lab.observe.trace import trace_facts
from handshake_lab.render.text import output_width, wrap
from handshake_lab.topo import netem
from handshake_lab.topo.caps import netns_route_facts, nft_available
from handshake_lab.topo.ipv6 import ipv6_findings, read_ipv6_facts
from handshake_lab.topo.registry import cleanup_leftovers


def _line(ok: bool, name: str, detail: str) -> None:
    head = f"{'ok' if ok else '--'}  {name:<9} "
    for line in wrap(detail, output_width(), first=head, indent=" " * len(head)):
        typer.echo(line)


def netem_line(lang: str) -> tuple[bool, str]:
    """Whether ``--delay``/``--loss`` can work here, and what that means, in ``lang``: asked
    of the kernel in a namespace made for the probe (``topo.netem.probe``)."""
    try:
        reason = netem.probe()
    except HandshakeLabError as error:
        return False, netem_label("netem_unknown", lang).format(detail=error)
    if reason is None:
        return True, netem_label("netem_ok", lang)
    if reason.startswith("cannot probe"):
        return False, netem_label("netem_unknown", lang).format(detail=reason)
    detail = reason.rpartition("tc said: ")[2].rstrip(")") or reason
    return False, netem_label("netem_missing", lang).format(detail=detail)


def doctor_report(lang: str = "en") -> ExitStatus:
    """Every line: ok or --, a name, what it means, in ``lang`` (a reason a lower layer gives,
    such as a path or a kernel option, is quoted as it is)."""
    ss = tools.find("ss")
    _line(ss is not None, "ss", ss or doctor_text("ss_missing", lang))
    _line(True, "psutil", str(psutil.__version__))  # a dependency: the import proves it
    try:
        import uvloop  # noqa: PLC0415

        _line(True, "uvloop", str(getattr(uvloop, "__version__", "?")))
    except ImportError:
        _line(False, "uvloop", doctor_text("uvloop_missing", lang))
    root = os.geteuid() == 0
    who = (
        doctor_text("root_yes", lang)
        if root
        else doctor_text("root_no", lang, {"uid": str(os.geteuid())})
    )
    _line(root, "root", who)

    route = netns_route_facts()
    netns_ok = route.ok
    netns_text = doctor_text(f"netns_{route.how}", lang, {"detail": route.detail})
    if not route.nft and route.how in ("root", "userns"):
        netns_text += doctor_text("netns_nft_missing", lang)
    _line(netns_ok, "netns", netns_text)
    nft = nft_available()
    _line(nft, "nft", doctor_text("nft_ok" if nft else "nft_missing", lang))
    if root:
        _line(True, "capture", doctor_text("capture_root", lang))
    elif netns_ok:
        _line(True, "capture", doctor_text("capture_userns", lang))
    else:
        _line(False, "capture", doctor_text("capture_none", lang))

    ok, case, values = trace_facts()
    reason = doctor_text(f"trace_{case}", lang, values)
    _line(ok, "tracefs", reason if ok else doctor_text("trace_missing", lang, {"reason": reason}))
    for finding in ipv6_findings(read_ipv6_facts()):
        text = doctor_text(finding.key, lang, finding.values)
        _line(finding.ok is not False, finding.name, text)
    ok, meaning = netem_line(lang)
    _line(ok, "netem", meaning)
    return ExitStatus.OK if ss is not None else ExitStatus.MISSING_DEPENDENCY


def cleanup_command(dry_run: bool, *, pid: int | None = None) -> ExitStatus:
    """Remove (or list) prefixed leftovers of runs that are no longer alive; with ``pid``,
    only those of that run (its objects carry the pid in their names)."""
    if os.geteuid() != 0:
        typer.echo("nothing to do: only root can create (and so leave) namespaces and traces")
        return ExitStatus.OK
    try:
        objects = cleanup_leftovers(dry_run, pid=pid)
    except HandshakeLabError:
        raise
    verb = "would remove" if dry_run else "removed"
    for obj in objects:
        typer.echo(f"{verb} {obj}")
    if not objects:
        typer.echo("no leftovers with the hslab- prefix")
    return ExitStatus.OK
