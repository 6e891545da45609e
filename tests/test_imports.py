"""Who may import whom (DESIGN.md, STYLE.md 2b): importing `data` loads no framework (checked in a
child process), and an AST walk over every module, function-level imports and
importlib.import_module("...") calls included, finds no forbidden import:
data/ imports no framework and no backend; tf_impl/ never torch or lightning; torch_impl/ never
tensorflow or keras; compare/ neither framework nor a backend package (it runs them as children).
Run: pytest tests/test_imports.py"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, child_env

TF = {"tensorflow", "keras", "tf_keras"}
TORCH = {"torch", "lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics", "torchvision"}
FORBIDDEN = {
    "data": TF | TORCH | {"jax", "tf_impl", "torch_impl", "compare"},
    "tf_impl": TORCH | {"compare", "torch_impl"},
    "torch_impl": TF | {"compare", "tf_impl"},
    "compare": TF | TORCH | {"jax", "tf_impl", "torch_impl"},
}


def imported_modules(path: Path) -> set:
    """Top-level names of every module `path` imports: import statements anywhere in the file
    (function-level lazy imports too) and importlib.import_module / __import__ with a literal name.
    Relative imports stay inside the package and are not listed."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return {n.split(".")[0] for n in names}


def violations(package: str, root: Path = ROOT) -> list:
    """['file: module', ...] for every forbidden import in `root/package`."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for mod in sorted(imported_modules(path) & FORBIDDEN[package]):
            out.append(f"{path.relative_to(root)}: {mod}")
    return out


# --- the AST walk ------------------------------------------------------------------------------------

@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_layout(package):
    if not list((ROOT / package).rglob("*.py")):
        pytest.skip(f"{package}/ has no modules yet")
    assert violations(package) == []


def test_the_walk_finds_lazy_from_and_dynamic_imports(tmp_path):
    # the control: a module that breaks the rules in every way the walk claims to catch
    pkg = tmp_path / "torch_impl"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import importlib\n"
        "from tensorflow import keras\n"
        "def lazy():\n"
        "    import tf_keras.layers\n"
        "    return importlib.import_module('compare.report')\n"
        "from . import models  # relative: fine\n")
    assert violations("torch_impl", tmp_path) == ["torch_impl/bad.py: compare", "torch_impl/bad.py: tensorflow",
                                                 "torch_impl/bad.py: tf_keras"]


# --- importing data in a fresh process -------------------------------------------------------------------

LOADED = ("import sys, {mods}\n"
          "print(','.join(sorted(m for m in {frameworks!r} if m in sys.modules)))")


def frameworks_loaded_by(modules: str, prelude: str = "") -> list:
    code = prelude + LOADED.format(mods=modules, frameworks=sorted(TF | TORCH))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().split(",") if m]


def test_importing_data_loads_neither_tensorflow_nor_torch():
    mods = "data, data.sources, data.formats, data.stream, data.registry, data.contract, data.loop, " \
           "data.weights, data.arch, data.cli, data.__main__"
    assert frameworks_loaded_by(mods) == []


def test_the_subprocess_check_sees_a_loaded_framework():
    # the control: a process where 'torch' is in sys.modules is reported as such
    assert frameworks_loaded_by("data", prelude="import sys, types; sys.modules['torch'] = types.ModuleType('torch')\n") \
        == ["torch"]
