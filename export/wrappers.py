"""The deployed graphs: the network plus its pre- and post-processing, all inside ONNX."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from training import KANet


class FrameIO(nn.Module):
    """uint8 N x H x W x 3 BGR frames in, the same out.

    Colour order, [-1, 1] scaling, NCHW layout, padding to a multiple of 16, crop,
    clamp and rounding all run in the graph, so a runtime hands decoded frames
    straight over. The uint8 casts sit at the very edges: TensorRT takes uint8
    only into and out of a Cast.
    """

    def __init__(self, model: KANet) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> Tensor:
        rgb = frames.to(torch.float32).flip(-1).permute(0, 3, 1, 2)
        clean = self.model.dehaze(rgb * (2.0 / 255.0) - 1.0)
        return torch.round(clean * 255.0).permute(0, 2, 3, 1).flip(-1).to(torch.uint8)


class TensorIO(nn.Module):
    """float32 N x 3 x H x W RGB in [-1, 1] in, [0, 1] out (for analysis)."""

    def __init__(self, model: KANet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.dehaze(x)


IO_KINDS = {"frames": FrameIO, "tensor": TensorIO}
IO_NAMES = {"frames": ("frames", "dehazed"), "tensor": ("input", "output")}
