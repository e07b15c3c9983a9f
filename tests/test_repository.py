"""Repository-wide rules: the runtime stays free of torch; the command lists its subcommands."""
from __future__ import annotations

import ast
import re
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


def test_kanet_help_lists_the_subcommands_the_readme_documents():
    """The commands come from README's command block, not from the table the parser is built from, and each
    must be a listed entry of --help (its own line), not just a word somewhere in it."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The command", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    documented = {line.split()[1] for line in block.splitlines() if line.startswith("kanet ")} - {"--help", "--version"}
    assert documented == {"info", "export", "build", "parity", "run", "synth", "train", "eval", "bench", "demo"}
    out = subprocess.run([sys.executable, "-m", "kanet", "--help"], capture_output=True, text=True, check=True,
                         cwd=REPO)
    listed = {m.group(1) for m in re.finditer(r"^    (\w+)\s", out.stdout, re.M)}
    assert listed == documented, out.stdout
