"""Shrink a training checkpoint to what deployment needs: FP16 weights, FP32 RFF buffers.

Training checkpoints carry the optimizer, EMA and a second copy of the weights (~670 MB);
a release holds only the deployable weights, stored in FP16 (~111 MB). `load_checkpoint`
casts them back to FP32, and every export and parity check starts from those FP32 values,
so the release is self-consistent; the rounding is measured against the source when written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import checkpoint_payload, load_checkpoint, save_payload


def release_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, **info: Any) -> dict[str, float]:
    """Write dst from src; returns the rounding's effect on one test frame (max |diff| in [0, 1])."""
    model = load_checkpoint(src)
    payload = checkpoint_payload(model, release=info)
    payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    save_payload(payload, dst)
    released = load_checkpoint(dst)
    frame = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        diff = (model.dehaze(frame) - released.dehaze(frame)).abs()
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "bytes": Path(dst).stat().st_size}
