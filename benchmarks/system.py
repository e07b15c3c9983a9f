"""What ran a benchmark: host, device, driver, library versions and the git commit."""
from __future__ import annotations

import datetime
import importlib
import os
import platform
import subprocess
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "numpy", "onnx", "onnxruntime", "openvino", "tensorrt", "tensorrt_rtx", "cv2", "av", "polygraphy")


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "installed")
    except ImportError:
        return None


def git_commit() -> dict:
    """HEAD and whether the tree had uncommitted changes (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def gpu_info(device: torch.device) -> dict | None:
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    info = {"name": props.name, "compute_capability": f"SM{props.major}{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}
    try:
        from cuda.bindings import runtime as cudart

        err, version = cudart.cudaDriverGetVersion()
        if int(err) == 0:
            info["cuda_driver_api"] = f"{version // 1000}.{version % 1000 // 10}"
    except ImportError:
        pass
    try:  # the driver release (e.g. 570.124.06) is only known to nvidia-smi / NVML
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i",
                               str(device.index or 0)], capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            info["driver"] = done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def describe(device: torch.device) -> dict:
    gpu = gpu_info(device)
    return {
        "device": gpu["name"] if gpu else f"CPU: {cpu_model()}",
        "gpu": gpu,
        "cpu": {"model": cpu_model(), "physical_cores": psutil.cpu_count(logical=False),
                "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "torch_threads": torch.get_num_threads(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "git": git_commit(),
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
