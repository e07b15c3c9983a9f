"""Repository-wide rules: packages import only down the stack, the runtime and evaluation stay free of torch;
the command lists its subcommands; a wheel carries the package data."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


# Bottom to top: a package may import the ones below it, never one above.
LAYERS = ["runtime", "evaluation", "training", "export", "benchmarks", "kanet"]
TORCH_FREE = ["runtime", "evaluation"]  # never import torch, directly or through a package above them


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


def test_torch_free_packages_below_the_torch_ones():
    assert all(LAYERS.index(package) < LAYERS.index("training") for package in TORCH_FREE)


@pytest.mark.parametrize("package", TORCH_FREE)
def test_torch_free_sources_never_import_torch(package):
    offenders = [f"{where} {name}" for where, name in _imports(package)
                 if name.split(".")[0] in {"torch", "torchvision"}]
    assert offenders == []


@pytest.mark.parametrize("package", TORCH_FREE)
def test_importing_a_torch_free_package_loads_no_torch(package):
    code = f"import sys, {package}, pkgutil, importlib\n" \
           f"[importlib.import_module(m.name) for m in pkgutil.walk_packages({package}.__path__, '{package}.')]\n" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_kanet_help_lists_the_subcommands_the_readme_documents():
    """The commands come from README's command block, not from the table the parser is built from, and each
    must be a listed entry of --help (its own line), not just a word somewhere in it."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The command", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    documented = {line.split()[1] for line in block.splitlines() if line.startswith("kanet ")} - {"--help", "--version"}
    assert documented == {"info", "export", "build", "parity", "run", "synth", "train", "eval", "bench", "demo", "doctor", "triton"}
    out = subprocess.run([sys.executable, "-m", "kanet", "--help"], capture_output=True, text=True, check=True,
                         cwd=REPO)
    listed = {m.group(1) for m in re.finditer(r"^    (\w+)\s", out.stdout, re.M)}
    assert listed == documented, out.stdout


@pytest.mark.slow
def test_a_built_wheel_carries_its_data_and_finds_it_from_any_folder(tmp_path):
    """A non-editable install has no checkout beside it: the samples and the frame cost table must travel as
    package data, and `kanet demo` without the repository's checkpoint says how to give one."""
    from kanet.bundled import SAMPLES

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in LAYERS:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "results"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "wheel"), "-q"], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "wheel").glob("kanet-*.whl"))
    photos = sorted(p.name for p in SAMPLES.glob("*.png"))
    with zipfile.ZipFile(wheel) as archive:
        assert {f"kanet/samples/{name}" for name in photos} <= set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def installed(*argv: str) -> subprocess.CompletedProcess:
        """Python with the unpacked wheel first on its path, in a folder outside the checkout."""
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=elsewhere, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(tmp_path / "installed")})

    out = installed("-c", "from kanet.bundled import SAMPLES; print(SAMPLES); "
                          "print(*sorted(p.name for p in SAMPLES.glob('*.png')))")
    where, names = out.stdout.splitlines()
    assert Path(where) == tmp_path / "installed" / "kanet" / "samples" and names.split() == photos

    out = installed("-c", "from runtime.frame_cost import oversize_warning; "
                          "print(oversize_warning(1536, 2048, 'onnxruntime:CPUExecutionProvider'))")
    assert "extrapolated from kanet bench at 1080x1920" in out.stdout, out.stdout + out.stderr

    demo = installed("-m", "kanet", "demo")
    default = tmp_path / "installed" / "weights" / "kanet_outdoor.pt"
    assert (demo.returncode, demo.stderr.splitlines()) == (2, [
        f"kanet demo: error: {default}: the default checkpoint is not installed with the package (it comes with a "
        "checkout of the repository, weights/: at 112 MB it is over PyPI's size limit); pass --checkpoint PATH, "
        "an official KA-Net .pth or one of this project's"]), demo.stderr
    assert list(elsewhere.iterdir()) == []
