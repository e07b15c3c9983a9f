"""Which TensorRT is installed: full TensorRT when importable, else TensorRT-RTX (same Python API)."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import DehazeError


class TensorRTMissing(DehazeError, ImportError):
    """Neither tensorrt nor tensorrt_rtx can be imported."""


def import_tensorrt(prefer: str | None = None) -> tuple[ModuleType, str]:
    """(module, flavour): full TensorRT when importable, else TensorRT-RTX."""
    names = [prefer] if prefer else ["tensorrt", "tensorrt_rtx"]
    for name in names:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    raise TensorRTMissing(f"none of {', '.join(names)} is importable; install tensorrt-rtx-cu13 (any machine) "
                          "or TensorRT from NVIDIA's index (GPU machines)")


FULL_TENSORRT = "pip install --extra-index-url https://pypi.nvidia.com -e '.[tensorrt]'"


def rtx_unsupported(trt_rtx: ModuleType, compute_capability: str) -> str | None:
    """Why TensorRT-RTX cannot build or run for this GPU (e.g. SM90, H100/H200); None when it can.
    Its ComputeCapability enum names exactly the targets it has kernels for."""
    name = compute_capability.upper()
    if name.startswith("SM") and name in trt_rtx.ComputeCapability.__members__:
        return None
    return (f"TensorRT-RTX does not support this GPU ({compute_capability}); "
            f"install full TensorRT: {FULL_TENSORRT}")
