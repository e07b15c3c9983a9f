"""FLOPs per frame, counted once per resolution with torch.utils.flop_counter.

Counted on meta tensors: no arithmetic runs, so 1080p costs the same fraction of a
second as 256x256. It is also the correct count here: on CPU, eager attention runs
the fused `_scaled_dot_product_flash_attention_for_cpu` kernel, which has no FLOP
formula, so a real CPU run would silently leave out attention (most of the cost at
1080p); on meta the same call decomposes into the matmuls that are counted.
A multiply-add counts as 2 FLOPs (FlopCounterMode's convention).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from export.wrappers import FrameIO
from training import KANet


def count_flops(batch: int, height: int, width: int) -> dict:
    """{"total": FLOPs for one batch of uint8 frames, "per_frame": ..., "by_op": {aten op: FLOPs}}."""
    with torch.device("meta"):
        wrapper = FrameIO(KANet()).eval()
    frames = torch.empty((batch, height, width, 3), dtype=torch.uint8, device="meta")
    # no_grad, not inference_mode: FlopCounterMode's module tracker needs autograd-aware tensors.
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        wrapper(frames)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    total = int(counter.get_total_flops())
    return {"total": total, "per_frame": total // batch, "by_op": by_op}
