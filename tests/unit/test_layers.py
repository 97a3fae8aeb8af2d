"""The package's layers: who may import whom (docs/architecture.md draws the picture).

A package may import only the packages below it in ``LAYERS`` (and itself): never one above,
so there is no circle and no upward import. No module imports one of our own modules inside a
function, where an import circle or an upward import would hide from this test; the one
exception is ``cli/app.py``, which imports each command's module when that command runs, so
that ``--help`` and shell completion start in tens of milliseconds instead of loading the
engine, the observers and asyncio first. Foreign imports inside functions are allowed only for
the optional dependency named in ``OPTIONAL_IN_FUNCTIONS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "handshake_lab"

LAYERS: tuple[str, ...] = (
    "",  # the version, errors, outputs, signals, tools: the base everyone may use
    "tcp",
    "i18n",
    "spec",
    "topo",
    "observe",
    "capture",
    "net",
    "agent",
    "placement",
    "record",
    "lab",
    "watch",
    "render",
    "cli",
)
"""Lowest first. ``__main__`` stands above everything (it only starts the CLI)."""

BASE_MODULES = frozenset(
    {
        "handshake_lab",
        "handshake_lab.errors",
        "handshake_lab.outputs",
        "handshake_lab.signals",
        "handshake_lab.tools",
    }
)
LAZY_IMPORTS_ALLOWED = frozenset({"cli/app.py"})
OPTIONAL_IN_FUNCTIONS = frozenset({"uvloop"})
"""uvloop: optional (``--loop uvloop``); a machine without it still runs every asyncio lab."""


def layer_of(module: str) -> int:
    """The layer index of a dotted module name inside the package."""
    if module in BASE_MODULES:
        return 0
    parts = module.split(".")
    assert parts[0] == "handshake_lab", module
    if len(parts) > 1 and parts[1] == "__main__":
        return len(LAYERS)
    return LAYERS.index(parts[1])


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importer's package
        base = importer.split(".")[: -node.level]
        return [".".join([*base, node.module] if node.module else base)]
    assert node.module is not None
    if node.module == "handshake_lab":  # from handshake_lab import x: maybe a subpackage
        return [
            f"handshake_lab.{alias.name}" if (PACKAGE / alias.name).is_dir() else node.module
            for alias in node.names
        ]
    return [node.module]


def own_imports(path: Path, importer: str | None = None) -> list[tuple[int, str, bool]]:
    """(line, module, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            nodes = ast.walk(fn)
            inside.update(id(n) for n in nodes if isinstance(n, ast.Import | ast.ImportFrom))
    importer = importer or module_name(path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in imported(node, importer):
                out.append((node.lineno, name, id(node) in inside))
    return out


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {""}


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers_only(path: Path) -> None:
    importer = module_name(path)
    own = layer_of(importer) if importer != "handshake_lab" else 0
    upward = [
        f"line {line}: {name} (layer {LAYERS[layer_of(name)] or 'base'})"
        for line, name, _ in own_imports(path)
        if name.startswith("handshake_lab") and layer_of(name) > own
    ]
    assert not upward, f"{importer} is in layer {LAYERS[own] or 'base'} but imports {upward}"


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_inside_a_function(path: Path) -> None:
    rel = str(path.relative_to(PACKAGE))
    late = [
        f"line {line}: {name}"
        for line, name, in_function in own_imports(path)
        if in_function
        and not (rel in LAZY_IMPORTS_ALLOWED and name.startswith("handshake_lab"))
        and name.split(".")[0] not in OPTIONAL_IN_FUNCTIONS
    ]
    assert not late, f"{rel} imports inside a function: {late}"


def test_the_layer_check_catches_an_upward_and_a_late_import(tmp_path: Path) -> None:
    # The checks above could pass by reading nothing: show they see what they must refuse.
    fake = tmp_path / "handshake_lab" / "tcp"
    fake.mkdir(parents=True)
    source = fake / "bad.py"
    source.write_text(
        "from handshake_lab.render.table import WIDTH\n"
        "def f() -> None:\n"
        "    import handshake_lab.cli.app\n",
        encoding="utf-8",
    )
    found = own_imports(source, "handshake_lab.tcp.bad")
    assert [(name, late) for _, name, late in found] == [
        ("handshake_lab.render.table", False),
        ("handshake_lab.cli.app", True),
    ]
    assert all(layer_of(name) > layer_of("handshake_lab.tcp.bad") for _, name, _ in found)
