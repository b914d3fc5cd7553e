"""Imports run down the layers only (docs/architecture.md, "Layers"), including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rawlab"

# Lower number = lower layer. learn and stats share a layer but must not import each other.
LAYER = {
    "errors": 0, "bayer": 0, "_version": 0, "outputs": 0,
    "rawmeta": 1, "rawio": 1, "dng": 1, "demosaic": 1,
    "cluster": 2,
    "catalog": 3,
    "noise": 4, "calibrate": 4,
    "synth": 5, "burst": 5,
    "learn": 6, "stats": 6,
    "deploy": 7,
    "evaluation": 8, "serve": 8,
    "cli": 9, "demo": 9, "__main__": 9, "__init__": 9,
}  # fmt: skip


def _unit(module_path: Path) -> str:
    rel = module_path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(tree: ast.AST, module_path: Path) -> set[str]:
    """The top-level rawlab units (``catalog``, ``bayer`` ...) that a module imports, anywhere in it."""
    rel = module_path.relative_to(PACKAGE)
    pkg_parts = list(rel.parts[:-1])  # the module's package inside rawlab
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "rawlab" and len(parts) > 1:
                    out.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "rawlab":
                    continue
                rest = parts[1:]
            else:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                rest = base + ((node.module or "").split(".") if node.module else [])
            if rest:
                out.add(rest[0])
            else:  # ``from . import x`` at the package root
                out.update(alias.name for alias in node.names)
    return out


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in _modules()}
    assert units <= set(LAYER), f"add these to LAYER and docs/architecture.md: {sorted(units - set(LAYER))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_it(path):
    unit = _unit(path)
    if unit in ("__init__", "cli", "demo", "__main__"):
        return
    imported = _imported_units(ast.parse(path.read_text()), path) - {unit}
    upward = sorted(u for u in imported if u in LAYER and LAYER[u] > LAYER[unit])
    siblings = sorted(u for u in imported if u in LAYER and LAYER[u] == LAYER[unit] and LAYER[u] >= 3)
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {LAYER[unit]}) imports higher layers: {upward}"
    assert not siblings, f"{path.relative_to(PACKAGE)} imports a sibling package of its layer: {siblings}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The checker itself: a lazy import inside a function counts."""
    src = "def f():\n    from ..deploy import runtime\n    import rawlab.evaluation\n"
    fake = PACKAGE / "learn" / "fake.py"
    assert _imported_units(ast.parse(src), fake) == {"deploy", "evaluation"}
