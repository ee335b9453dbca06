"""The code's shape, checked: imports point down (the import-linter contract in pyproject.toml)
and no module imports another module's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "tenants", "billing", "storage", "vocabulary")


def test_imports_point_down():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a test dependency (pyproject.toml)"
    out = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def private_imports(source: str) -> list[str]:
    """`from x import _name` of a project module: a name its module keeps to itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
    return found


def test_the_private_import_check_sees_one():
    assert private_imports("from gateway.processes.serving import _hidden, visible") == [
        "gateway.processes.serving._hidden"
    ]
    assert private_imports("from os import _exit") == []


def test_no_module_imports_another_modules_private_names():
    offenders = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found = private_imports(path.read_text())
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}
