from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from export.engine import BuildOptions, Profile

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SAMPLES = REPO / "kanet" / "samples"


def _has_gpu() -> bool:
    if torch.cuda.is_available():
        return True
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


HAS_GPU = _has_gpu()


def _untracked_in_repository() -> set[str] | None:
    """What git reports as new, changed or ignored in the checkout (Python's and pytest's caches aside);
    None outside a git checkout."""
    done = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode:
        return None
    return {line[3:] for line in done.stdout.splitlines()
            if "__pycache__/" not in line and ".pytest_cache/" not in line and not line.endswith(".pyc")}


@pytest.fixture(scope="session", autouse=True)
def the_repository_stays_untouched():
    """Tests write into temporary folders only: anything that appears in the checkout during the session
    (an engine cache, a report, a default output folder) fails it."""
    before = _untracked_in_repository()
    yield
    after = _untracked_in_repository()
    if before is not None and after is not None:
        assert sorted(after - before) == [], "tests wrote into the repository"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip)


def parse_error(stderr: str, prog: str) -> str:
    """The error line of a parse error, checking that it is all there is besides the pointer to --help: no
    usage block (kanet.cli.Parser)."""
    lines = stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{prog}: error: "), stderr
    assert lines[1] == f"see `{prog} --help`", stderr
    return lines[0]


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="session")
def model():
    """A seeded KA-Net in eval mode with non-trivial BatchNorm statistics."""
    from training import KANet

    torch.manual_seed(0)
    net = KANet(rff_seed=0)
    randomise_batchnorm(net)
    return net.eval()


# A profile small enough for a fast CPU build, one target: what CI builds and inspects.
SMALL = BuildOptions(Profile((1, 64, 64), (1, 96, 128), (2, 128, 160)), compute_capabilities=("SM89",))


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """Every test and the commands they start cache here (export.cache), never in ~/.cache."""
    folder = tmp_path_factory.mktemp("user_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KANET_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory) -> Path:
    from training import save_checkpoint

    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "kanet.pt")


@pytest.fixture(scope="session")
def exported(checkpoint, tmp_path_factory) -> dict:
    """`kanet export` (the command itself) of the seeded `model`: FP32 + FP16 frame-I/O ONNX, a small-profile
    engine, export.json; `summary` is export.json, `stdout` what the command printed. It runs in the empty
    folder `cwd`, caching in `cache` ($KANET_CACHE_DIR), so a test can check that it left nothing behind."""
    root = tmp_path_factory.mktemp("export")
    (root / "cwd").mkdir()
    shapes = {name: "x".join(map(str, getattr(SMALL.profile, name))) for name in ("min", "opt", "max")}
    done = subprocess.run([sys.executable, "-m", "kanet", "export", str(checkpoint), "--out", str(root / "out"),
                           *(f"--{k}={v}" for k, v in shapes.items()),
                           *(f"--compute-capability={cc}" for cc in SMALL.compute_capabilities)],
                          cwd=root / "cwd", env={**os.environ, "KANET_CACHE_DIR": str(root / "cache")},
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((root / "out" / "export.json").read_text())
    return {"dir": root / "out", "cache": root / "cache", "cwd": root / "cwd", "summary": summary,
            "stdout": done.stdout}


@pytest.fixture(scope="session")
def frame_onnx(exported) -> Path:
    """FP32 frame-I/O ONNX (uint8 N x H x W x 3 BGR in and out) of the seeded `model`;
    the FP16 ONNX, the engine and export.json lie beside it."""
    return exported["dir"] / "kanet_fp32.onnx"


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    """A frame-I/O (uint8 N x H x W x 3) identity model: enough for the builder to parse."""
    frames_in = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["n", "h", "w", 3])
    frames_out = helper.make_tensor_value_info("dehazed", TensorProto.UINT8, ["n", "h", "w", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["dehazed"])], "tiny", [frames_in], [frames_out])
    path = tmp_path / "tiny_fp16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="session")
def tensor_onnx(checkpoint, tmp_path_factory) -> Path:
    """FP32 tensor-I/O ONNX (float NCHW in [-1, 1] in, [0, 1] out) of the seeded `model`, for analysis."""
    from export.pipeline import export_checkpoint

    out = tmp_path_factory.mktemp("tensor")
    export_checkpoint(checkpoint, out, io="tensor", engine=False)
    return out / "kanet_fp32.onnx"

