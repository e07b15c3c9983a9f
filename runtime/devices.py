"""`--device`: one parser for every command that runs a model (torch-free, so the runtime uses it too)."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import KanetError

DEVICE_HELP = ("auto (default: the first GPU when one is usable, else the CPU), cpu, or a GPU as N, cuda or "
               "cuda:N")


def parse_device(text: str | int) -> str:
    """What a user may write (auto, cpu, N, cuda, cuda:N) -> 'auto', 'cpu' or 'cuda:N' (also a torch device name)."""
    value = str(text).strip().lower()
    if value in ("auto", "cpu"):
        return value
    match = re.fullmatch(r"cuda|(?:cuda:)?(\d+)", value)
    if not match:
        raise KanetError(f"--device {text!r}: expected auto, cpu, a GPU index N, cuda or cuda:N")
    return f"cuda:{match.group(1) or 0}"


def gpu_index(device: str) -> int | None:
    """The GPU a parsed device names (auto: GPU 0, used when present); None for the CPU."""
    return None if device == "cpu" else int(device.partition(":")[2] or 0)


@dataclass(frozen=True)
class DeviceChoice:
    device: str       # as parse_device names it; 'cpu' after a fallback
    gpus: int         # NVIDIA GPUs usable here (0 on the CPU)
    note: str | None  # why auto fell back to the CPU, one line; None when it did not


def choose_device(device: str, count: Callable[[], int] | None = None) -> DeviceChoice:
    """A parsed `device` with the GPUs it may use (count: runtime.cuda.device_count). Where a GPU is present but
    CUDA cannot use it (CudaUnusable: an old driver), auto falls back to the CPU and says why; an explicit GPU
    raises that error."""
    if device == "cpu":
        return DeviceChoice("cpu", 0, None)
    from .cuda import CudaUnusable, device_count

    try:
        gpus = (count or device_count)()
    except CudaUnusable as exc:
        if device != "auto":
            raise
        return DeviceChoice("cpu", 0, f"{exc}; running on the CPU")
    return DeviceChoice(device, gpus, None)
