"""The packages depend one way only: `scaling` <- `sweeps` <- `analysis` (docs/design.md).

Two checks: every import statement in a package's source (top-level or inside a function) names no package above it,
and importing every module of a package in a fresh interpreter loads no package above it.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABOVE = {"scaling": {"sweeps", "analysis"}, "sweeps": {"analysis"}, "analysis": set()}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module an import statement in `path` names (absolute imports only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_import_statement_points_up_the_graph(package):
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & ABOVE[package])
                 for p in sorted((ROOT / package).rglob("*.py"))}
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"{package} imports packages above it: {offenders}"


def test_the_check_sees_a_function_level_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from analysis.report import fit_all\n    import sweeps.grid\n")
    assert imported_packages(src) == {"analysis", "sweeps"}


LOADER = """
import importlib, json, pkgutil, sys
package = sys.argv[1]
root = importlib.import_module(package)
failed = {}
for info in pkgutil.walk_packages(root.__path__, package + "."):
    try:
        importlib.import_module(info.name)
    except ImportError as e:  # an optional extra that is not installed
        failed[info.name] = str(e)
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"loaded": loaded, "failed": failed}))
"""


@pytest.mark.parametrize("package", ["scaling", "sweeps"])
def test_importing_every_module_loads_no_package_above(package):
    out = subprocess.run([sys.executable, "-c", LOADER, package], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not set(result["loaded"]) & ABOVE[package], result
    assert not any(package in msg for msg in result["failed"].values()), result["failed"]
