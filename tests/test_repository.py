"""Repository-wide rules: the runtime stays free of torch; the command lists its subcommands."""
from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO


def test_runtime_sources_never_import_torch():
    offenders = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in {"torch", "torchvision", "training"}]
    assert offenders == []


def test_importing_runtime_loads_no_torch():
    code = "import sys, runtime, pkgutil, importlib\n" \
           "[importlib.import_module(m.name) for m in pkgutil.walk_packages(runtime.__path__, 'runtime.')]\n" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_kanet_help_lists_subcommands():
    from kanet.cli import SUBCOMMANDS

    out = subprocess.run([sys.executable, "-m", "kanet", "--help"], capture_output=True, text=True, check=True)
    for name in SUBCOMMANDS:
        assert name in out.stdout
