"""`--device`: one parser for every command that runs a model (torch-free, so the runtime uses it too)."""
from __future__ import annotations

import re

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
