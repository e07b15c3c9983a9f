"""`kanet info [CKPT]`: the checkpoint description and the environment facts, as a table and as JSON."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from dataclasses import asdict

import torch

from conftest import HAS_GPU, REPO
from runtime.environment import describe_environment
from training.checkpoint_info import describe_checkpoint

SHIPPED = REPO / "weights" / "kanet_outdoor.pt"
PARAMETERS = 55_657_426


def _info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", "info", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_our_checkpoint_is_described(checkpoint):
    info = describe_checkpoint(checkpoint)
    assert (info.format, info.precision, info.tensors, info.parameters) == ("weights", "float32", 481, PARAMETERS)
    assert info.layout_ok and "matches the official KA-Net layout" in info.layout
    assert info.rff_seed == 0 and info.rff == "stored: seed 0's draw"
    assert info.step is None and info.metadata == {}


def test_official_checkpoint_with_a_wrong_layout_is_described_not_refused(model, tmp_path):
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    del state["module.Tencoder.norm1.weight"]
    path = tmp_path / "official.pth"
    torch.save({"model": state, "epoch": 11, "max_psnr": 30.5, "optimizer": {"state": {}, "param_groups": [1]}}, path)
    info = describe_checkpoint(path)
    assert info.format == "official" and info.rff_seed is None and "drawn from seed 0 when loaded" in info.rff
    assert not info.layout_ok and info.layout == "missing (1): Tencoder.norm1.weight"
    assert info.metadata == {"epoch": 11, "max_psnr": 30.5, "optimizer": "dict of 2 entries"}
    assert info.parameters == PARAMETERS - model.Tencoder.norm1.weight.numel()
    done = _info(path)
    assert done.returncode == 1, done.stderr
    assert "MISMATCH: missing (1): Tencoder.norm1.weight" in done.stdout and "epoch" in done.stdout


def test_shipped_checkpoint_table_and_json(tmp_path):
    report = tmp_path / "sub" / "info.json"
    done = _info(SHIPPED, "--json", report)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for text in ("release: deployable weights only", "float16 (loaded as float32)", f"{PARAMETERS:,} in 481 tensors",
                 "ok: matches the official KA-Net layout", "name=kanet_outdoor", "steps=3500",
                 f"torch                  {importlib.metadata.version('torch')}", "onnxruntime providers",
                 "CPUExecutionProvider"):
        assert text in done.stdout, text
    facts = json.loads(report.read_text())
    assert facts["checkpoint"] == asdict(describe_checkpoint(SHIPPED))
    assert facts["checkpoint"]["metadata"]["release"]["val_psnr_db"] == 25.59
    environment = asdict(describe_environment())
    assert facts["environment"]["libraries"] == environment["libraries"]
    assert facts["environment"]["onnxruntime_providers"] == environment["onnxruntime_providers"]
    if not HAS_GPU:
        assert "no NVIDIA GPU visible: " in done.stdout
        assert facts["environment"]["gpus"] == [] and facts["environment"]["no_gpu_reason"]


def test_environment_names_versions_providers_and_gpus_without_torch():
    code = ("import sys, json, dataclasses; from runtime.environment import describe_environment; "
            "env = describe_environment(); assert 'torch' not in sys.modules, 'imported torch'; "
            "print(json.dumps(dataclasses.asdict(env)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)
    versions = {lib["name"]: lib["version"] for lib in env["libraries"]}
    assert set(versions) >= {"torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "cv2", "av"}
    assert versions["torch"] == importlib.metadata.version("torch")
    assert versions["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    if HAS_GPU:
        assert env["gpus"] and env["gpus"][0]["name"] and env["gpus"][0]["compute_capability"].startswith("SM")
    else:
        assert env["gpus"] == [] and env["no_gpu_reason"]
