"""``bench/matrix.py`` (``make matrix``): the cells it runs and how it reads a run's verdict.

The closing notes quote its table, so what makes a cell pass must be the CLI's exit code and
its ``result`` event, never the script's own opinion.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from handshake_lab.spec.loader import builtin_dir, builtin_names, load_lab


def _matrix() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "matrix.py"
    spec = importlib.util.spec_from_file_location("hslab_bench_matrix", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


matrix = _matrix()


def test_cells_follow_each_labs_declared_topologies() -> None:
    names = builtin_names()
    cells = matrix.cells(names, ["asyncio", "uvloop"], list(matrix.PLACEMENTS), [4, 6])
    for name in names:
        lab = load_lab(builtin_dir() / f"{name}.toml")
        mine = {(c.topology, c.loop, c.ip) for c in cells if c.lab == name}
        wanted = {
            (t, loop, ip)
            for t in matrix.PLACEMENTS
            if (t == "loopback" and "loopback" in lab.topologies)
            or (t != "loopback" and "netns" in lab.topologies)
            if not (lab.dual and t == "netns-agent")  # one address: refused by design
            for loop in ("asyncio", "uvloop")
            for ip in ((matrix.DUAL,) if lab.dual else (4, 6))
        }
        assert mine == wanted, name


def test_a_real_run_passes_and_a_refused_one_fails_with_its_reason() -> None:
    good = matrix.run(matrix.Cell("half-close", "asyncio", "loopback", 4))
    assert good.passed, good.detail
    assert good.detail == "10/10"
    # stale-syn declares only namespaces: the CLI refuses loopback with its own exit code.
    bad = matrix.run(matrix.Cell("stale-syn", "asyncio", "loopback", 4))
    assert not bad.passed
    assert bad.detail.startswith("exit ")
    assert not bad.detail.startswith("exit 0")
    lines = matrix.table([good, bad], ["asyncio"], markdown=False)
    assert lines[0].split() == ["lab", "placement", "ip", "asyncio"]
    assert "pass" in lines[1]
    assert "half-close" in lines[1]
    assert "FAIL" in lines[2]
    assert bad.detail in lines[2]
    md = matrix.table([good], ["asyncio"], markdown=True)
    assert md[0] == "| lab | placement | ip | asyncio |"
