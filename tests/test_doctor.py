"""`kanet doctor`: the real command on this machine; on a GPU machine (GPU-marked) what it finds there."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kanet.doctor import DoctorReport, diagnose, table
from runtime.dehazer import engine_unusable

REPO = Path(__file__).resolve().parents[1]


def kanet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_doctor_on_this_machine_reports_every_part_and_writes_json(tmp_path):
    import onnxruntime
    import tensorrt_rtx

    from runtime.cuda import device_count

    result = kanet("doctor", "--json", str(tmp_path / "doctor.json"), cwd=tmp_path)
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert result.returncode == doc["exit_code"], result.stderr
    assert set(doc) == set(DoctorReport.__dataclass_fields__)
    lines = result.stdout.splitlines()
    for row in ("NVIDIA driver", "cuda-bindings", "tensorrt ", "tensorrt_rtx", "onnxruntime", "kanet run"):
        assert any(line.startswith(row) for line in lines), (row, result.stdout)
    rtx = next(f for f in doc["tensorrt"] if f["module"] == "tensorrt_rtx")
    assert rtx["version"] == tensorrt_rtx.__version__ and "SM89" in rtx["builds_ahead_for"]
    assert doc["onnxruntime"] == onnxruntime.__version__
    assert doc["onnxruntime_providers"] == onnxruntime.get_available_providers()
    if not device_count() and not doc["nvml_gpus"]:  # a CPU machine: says so plainly, exit 0
        assert result.returncode == 0 and doc["gpus"] == [] and doc["cuda_problem"] is None
        assert lines[-1].startswith("no NVIDIA GPU here")
        has_openvino = importlib.util.find_spec("openvino") is not None  # auto's CPU choice, openvino installed
        assert doc["backend"] == ("OpenVINO's CPU plugin" if has_openvino else "ONNX Runtime's CPU provider")
        assert doc["backend_reason"].startswith("no engine: no NVIDIA GPU is usable here; not on a GPU: ")
        assert lines[-1].startswith(f"no NVIDIA GPU here: kanet runs ONNX models on {doc['backend']}")
        assert rtx["gpus"] == []
    bad = kanet("doctor", "--json", str(tmp_path / "missing" / "doctor.json"), cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("kanet doctor: error: --json ")


@pytest.mark.gpu
def test_doctor_on_a_gpu_lists_it_and_says_whether_an_engine_runs():
    from runtime.cuda import compute_capability

    report = diagnose()
    assert report.driver and report.driver_cuda and report.nvml_gpus >= 1
    why = engine_unusable(0)
    if report.cuda_problem:  # an old driver: the GPU is present, unusable, and the report says why
        assert report.exit_code == 1 and report.cuda_problem in report.verdict
        return
    gpu = report.gpus[0]
    assert gpu.compute_capability == compute_capability(0) and gpu.memory_mib > 1000 and gpu.name
    installed = [f for f in report.tensorrt if f.version]
    assert installed and all(len(f.gpus) == len(report.gpus) for f in installed)
    if why is None:
        assert report.exit_code == 0 and "engine on GPU 0" in report.backend
        assert any(s.supported for f in installed for s in f.gpus)
    else:  # e.g. only TensorRT-RTX on an H100: exit 1 naming the fix
        assert report.exit_code == 1 and why in report.verdict
        assert report.backend in ("ONNX Runtime's GPU provider", "OpenVINO's CPU plugin", "ONNX Runtime's CPU provider")
    assert f"GPU 0  {gpu.name}, {gpu.compute_capability}" in table(report)
