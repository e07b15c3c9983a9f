"""Repository-wide rules: packages import only down the stack, the runtime stays free of torch; the command
lists its subcommands."""
from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO


# Bottom to top: a package may import the ones below it, never one above.
LAYERS = ["runtime", "training", "export", "benchmarks", "kanet"]


def _imports(package: str):
    """(where, imported module) for every absolute import in a package's sources."""
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            yield from ((f"{path.relative_to(REPO)}:{node.lineno}", name) for name in names)


def test_packages_import_only_down_the_stack():
    upward = [f"{where} {name}" for package in LAYERS for where, name in _imports(package)
              if name.split(".")[0] in LAYERS[LAYERS.index(package) + 1:]]
    assert upward == []


def test_runtime_sources_never_import_torch():
    offenders = [f"{where} {name}" for where, name in _imports("runtime")
                 if name.split(".")[0] in {"torch", "torchvision"}]
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
