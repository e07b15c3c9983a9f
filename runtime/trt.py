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
