"""What this machine offers KA-Net: library versions, ONNX Runtime providers, NVIDIA GPUs (torch-free).

Versions come from the installed distributions' metadata, so nothing heavy (torch) is imported;
GPUs from cuda-bindings, the same calls the engine backend makes, so the answer is what
`kanet run` will find.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import dataclass, field

from .errors import KanetError

# name shown -> (top-level import name, what it is for), in the order shown
LIBRARIES = {
    "torch": ("torch", "training, export, parity"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "ONNX models (run, eval, parity)"),
    "tensorrt": ("tensorrt", "engines: full TensorRT"),
    "tensorrt_rtx": ("tensorrt_rtx", "engines: TensorRT-RTX"),
    "cv2": ("cv2", "images, cameras"),
    "av": ("av", "video files, streams"),
    "cuda-bindings": ("cuda", "GPU access"),
}


@dataclass
class Library:
    name: str
    purpose: str
    version: str | None      # None: not installed
    distribution: str | None  # the pip package providing it


@dataclass
class Gpu:
    index: int
    name: str
    compute_capability: str
    memory_gib: float


@dataclass
class Environment:
    python: str
    platform: str
    libraries: list[Library]
    onnxruntime_providers: list[str]
    cuda_driver: str | None   # the CUDA version the driver supports; None without a driver
    gpus: list[Gpu] = field(default_factory=list)
    no_gpu_reason: str | None = None  # set when gpus is empty


def _library(name: str, module: str, purpose: str, providers: dict[str, list[str]]) -> Library:
    # a namespace like `cuda` has several distributions: the one named as shown first
    for dist in sorted(providers.get(module, []), key=lambda d: d != name):
        try:
            return Library(name, purpose, importlib.metadata.version(dist), dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    # importable without pip metadata (a system or source install)
    return Library(name, purpose, "installed (version unknown)" if importlib.util.find_spec(module) else None, None)


def _providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _gpus() -> tuple[str | None, list[Gpu], str | None]:
    """(driver's CUDA version, GPUs, why there are none)."""
    try:
        from . import cuda
    except ImportError as exc:
        return None, [], f"cuda-bindings cannot be imported ({exc}); pip install cuda-bindings"
    driver = cuda.driver_version()
    try:
        count = cuda.device_count()
    except KanetError as exc:  # a driver that this CUDA runtime cannot use
        return driver, [], str(exc)
    if count == 0:
        return driver, [], ("no NVIDIA driver is installed" if driver is None else
                            f"the NVIDIA driver (CUDA {driver}) reports no device")
    gpus = []
    for index in range(count):
        name, memory = cuda.device_name(index)
        gpus.append(Gpu(index, name, cuda.compute_capability(index), round(memory / 2**30, 1)))
    return driver, gpus, None


def describe_environment() -> Environment:
    providers = importlib.metadata.packages_distributions()
    driver, gpus, reason = _gpus()
    return Environment(platform.python_version(), platform.platform(),
                       [_library(name, module, purpose, providers) for name, (module, purpose) in LIBRARIES.items()],
                       _providers(), driver, gpus, reason)
