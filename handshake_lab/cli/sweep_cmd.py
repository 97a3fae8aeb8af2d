"""``sweep LAB --delay 0,10,50,200``: the lab once per RTT added, then times side by side.

Checks everything before the first run (the lab, the topology, the tools, netem when a delay
or a loss is not 0, the output paths), then runs the lab at each delay in fresh namespaces
(``lab.sweep``), says on stderr how each run went, and prints the table, CSV or JSON
(``render.sweep``); ``--html`` adds the page with the plots, ``--save-dir`` keeps each run's
record (``show``/``report`` read them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from handshake_lab import tools
from handshake_lab.cli.runlab import isolate_without_root, need_netem
from handshake_lab.errors import ExitStatus, OutputError, UsageError
from handshake_lab.lab.runner import Emit
from handshake_lab.lab.session import RunRequest
from handshake_lab.lab.sweep import parse_delays, sweep
from handshake_lab.observe.defaults import default_observers
from handshake_lab.outputs import check_output, write_output
from handshake_lab.placement import Topology
from handshake_lab.placement.place import link_refusal, step_set
from handshake_lab.record.sweep import SweepPoint
from handshake_lab.render.jsonl import JsonLinesRenderer
from handshake_lab.render.sweep import sweep_csv, sweep_html, sweep_json, sweep_table
from handshake_lab.render.text import output_width
from handshake_lab.spec.loader import find_lab
from handshake_lab.spec.model import STEP_SETS
from handshake_lab.topo.netem import Link

FORMATS = ("table", "csv", "json")


def _save_path(directory: Path, lab: str, link: Link) -> Path:
    return directory / f"{lab}.delay-{link.rtt_ms:g}ms.jsonl"


def sweep_command(
    name: str,
    *,
    delays_text: str,
    loss: float | None,
    loop: str,
    topology: Topology | None,
    output: str,
    html: Path | None,
    save_dir: Path | None,
    lang: str,
    argv: list[str] | None = None,
) -> ExitStatus:
    if output not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {output!r}")
    lab = find_lab(name)
    try:
        delays = parse_delays(delays_text)
        Link(loss_pct=loss or 0.0)
    except ValueError as error:
        raise UsageError(str(error)) from error
    chosen = topology or Topology.NETNS
    if any(d > 0 for d in delays) or loss:
        refusal = link_refusal(chosen)
        if refusal is not None:
            raise UsageError(refusal)
    steps_of = step_set(chosen)
    if STEP_SETS[steps_of] not in lab.topologies:
        raise UsageError(
            f"lab {lab.name} cannot run with {chosen.option}: it runs with --topology "
            + " or ".join(lab.topologies)
        )
    if html is not None:
        check_output(html)
    if save_dir is not None and not save_dir.is_dir():
        raise OutputError(f"{save_dir}: --save-dir must be an existing directory")
    holds = any(s.holds for s in lab.steps_for(steps_of))
    for tool in tools.needed_for(STEP_SETS[steps_of], holds=holds):
        tools.require(tool)
    need_netem(Link(rtt_ms=max(delays), loss_pct=loss or 0.0))  # before a userns rerun
    isolate_without_root(STEP_SETS[steps_of] == "netns", [lab.path, html, save_dir], argv)
    default_observers()
    base = RunRequest(lab=lab, topology=chosen, loop=loop)
    points: list[SweepPoint] = []
    files: list[TextIO] = []

    def emit_for(link: Link) -> Emit:
        if save_dir is None:
            return lambda event: None
        stream = _save_path(save_dir, lab.name, link).open("w", encoding="utf-8")
        files.append(stream)
        return JsonLinesRenderer(lang, stream)

    status = ExitStatus.OK
    try:
        for point, record in sweep(base, delays, loss or 0.0, emit_for):
            points.append(point)
            verdict = "kernel agreed" if point.passed else "kernel DISAGREED"
            took = record.result.duration_s if record.result is not None else 0.0
            sys.stderr.write(
                f"handshake-lab sweep: {lab.name} at +{point.rtt_ms:g} ms RTT: {verdict} "
                f"({took:.1f} s)\n"
            )
            sys.stderr.flush()
            if record.exit_status() is not ExitStatus.OK:
                status = ExitStatus.KERNEL_DISAGREED
    finally:
        for stream in files:
            stream.close()
    if output == "json":
        sys.stdout.write(json.dumps(sweep_json(points), ensure_ascii=False) + "\n")
    elif output == "csv":
        sys.stdout.write(sweep_csv(points))
    else:
        sys.stdout.write(sweep_table(points, lang, min(output_width(), 100)))
    if html is not None:
        page = sweep_html(points, lang).encode("utf-8")
        write_output(html, lambda stream: stream.write(page))
    return status


__all__ = ["FORMATS", "sweep_command"]
