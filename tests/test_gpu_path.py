"""The GPU path's decisions that a CPU machine can check, and (GPU-marked) what only a GPU can show."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def kanet(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_build_for_sm90_with_tensorrt_rtx_says_install_full_tensorrt(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    result = kanet("build", str(tiny_onnx), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                   "--compute-capability", "SM90")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "TensorRT-RTX does not support this GPU (SM90)" in lines[0] and "-e '.[tensorrt]'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_no_driver_means_no_gpu_and_an_old_driver_is_an_error():
    from cuda.bindings import runtime as cudart

    from runtime.cuda import device_count, device_count_error

    error = cudart.cudaError_t
    # This machine: no NVIDIA driver, so cuda-bindings reports cudaErrorInsufficientDriver with driver version 0.
    if cudart.cudaDriverGetVersion()[1] == 0:
        assert cudart.cudaGetDeviceCount()[0] == error.cudaErrorInsufficientDriver
        assert device_count() == 0
    assert device_count_error(error.cudaErrorNoDevice, 13000, 13050) is None
    why = device_count_error(error.cudaErrorInsufficientDriver, 12040, 13050)
    assert why.startswith("CUDA error cudaErrorInsufficientDriver") and "CUDA 12.4" in why and "R580" in why
    assert "tensorrt-cu12" in why


def test_fp32_builds_clear_tf32_fp16_builds_keep_the_default():
    from export.engine import BuildOptions, builder_config, import_tensorrt

    trt, _ = import_tensorrt()
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    assert builder.create_builder_config().get_flag(trt.BuilderFlag.TF32)  # the default this guards against
    assert not builder_config(trt, builder, BuildOptions(), "fp32").get_flag(trt.BuilderFlag.TF32)
    assert builder_config(trt, builder, BuildOptions(), "fp16").get_flag(trt.BuilderFlag.TF32)


def test_engine_cache_key_depends_on_the_gpu_targets():
    from export.engine import BuildOptions

    options = BuildOptions()
    assert options.key("sha", "tensorrt", "10.9", ["SM90"]) != options.key("sha", "tensorrt", "10.9", ["SM89"])


@pytest.mark.gpu
def test_full_tensorrt_manifest_records_this_gpu(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt", reason="full TensorRT is not installed")
    from export.engine import BuildOptions, Profile, build_engine
    from runtime.cuda import compute_capability

    options = BuildOptions(Profile((1, 64, 64), (1, 64, 64), (1, 64, 64)))
    manifest = build_engine(tiny_onnx, tmp_path / "tiny.plan", options, prefer="tensorrt")
    assert manifest["targets"]["compute_capabilities"] == [compute_capability(0)]
