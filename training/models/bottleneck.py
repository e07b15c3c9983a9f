"""DehazeBlock: the 512-channel bottleneck with the multi-receptive-field block (MRFEB1)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHANNELS = 512
RFF_REDUCTION = 8


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel // 2), dilation=dilation),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    )


class ChannelAttention(nn.Module):
    """SELayer: a global (pooled MLP) gate times a local (3x3 conv) gate, then sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                nn.Linear(hidden, channels, bias=False))
        self.fc1 = nn.Sequential(nn.Conv2d(channels, hidden, 3, 1, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, 3, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        global_gate = self.fc(x.mean(dim=(2, 3)))[:, :, None, None]
        return x * torch.sigmoid(global_gate * self.fc1(x))


class SpatialAttention(nn.Module):
    """SAM_cat: a per-pixel gate from the channel mean and a 1x1 projection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(channels, 1, 1)
        self.conv_sigm = nn.Sequential(nn.Conv2d(2, 1, 1), nn.ReLU(), nn.Conv2d(1, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        gate = self.conv_sigm(torch.cat([x.mean(dim=1, keepdim=True), self.conv_1(x)], dim=1))
        return x * gate


class ChannelSpatialAttention(nn.Module):
    """SSB: channel and spatial attention side by side, fused by a 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.CAU = ChannelAttention(channels)
        self.SAU = SpatialAttention(channels)
        self.conv_out = _conv_bn_relu(2 * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(torch.cat([self.CAU(x), self.SAU(x)], dim=1))


class DilatedResBlock(nn.Module):
    """DFconvResBlock: two dilated convs, concatenated, fused, attended, plus the input."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.DFconv1 = _conv_bn_relu(channels, channels, 3, dilation)
        self.DFconv2 = _conv_bn_relu(channels, channels, 3, dilation)
        self.conv_cat = _conv_bn_relu(2 * channels, channels, 1)
        self.AM = ChannelSpatialAttention(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.DFconv1(x)
        y = self.conv_cat(torch.cat([y, self.DFconv2(y)], dim=1))
        return self.AM(y) + x


class BranchGate(nn.Module):
    """AGB_mean: weighs three branches by a gate computed from their pooled channel means."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False), nn.Sigmoid())
        self.conv_out = _conv_bn_relu(channels, channels, 1)

    def forward(self, x1: Tensor, x2: Tensor, x3: Tensor) -> Tensor:
        pooled = torch.stack([x.mean(dim=(1, 2, 3)) for x in (x1, x2, x3)], dim=1)
        gate = self.fc(pooled)[:, :, None, None, None]
        return self.conv_out(x1 * gate[:, 0] + x2 * gate[:, 1] + x3 * gate[:, 2])


class MultiReceptiveFieldBlock(nn.Module):
    """MRFEB1: random-Fourier-feature branch plus two dilated branches, gated and added.

    The first branch sees sqrt(2/C) * cos(W x + b) of a C/8-channel projection of the
    input. The official code redraws W and b at every forward pass; here they are
    buffers drawn once from a seeded generator (same order and distributions), so
    the network is deterministic. `redraw_rff` restores per-pass redraws for training.
    The buffers are non-persistent so the state_dict matches the official layout;
    our checkpoints store them separately.
    """

    def __init__(self, channels: int = CHANNELS, dilations: tuple[int, int, int] = (1, 3, 5),
                 rff_seed: int = 0) -> None:
        super().__init__()
        self.MRFRB_1 = DilatedResBlock(channels, dilations[0])
        self.MRFRB_2 = DilatedResBlock(channels, dilations[1])
        self.MRFRB_3 = DilatedResBlock(channels, dilations[2])
        self.AGB = BranchGate(channels)
        self.faix = _conv_bn_relu(channels, channels // RFF_REDUCTION, 1)
        self.rff_scale = math.sqrt(2.0 / channels)
        self.redraw_rff = False
        self.register_buffer("rff_weight", torch.empty(channels, channels // RFF_REDUCTION), persistent=False)
        self.register_buffer("rff_bias", torch.empty(channels), persistent=False)
        self.draw_rff(torch.Generator().manual_seed(rff_seed))

    @torch.no_grad()
    def draw_rff(self, generator: torch.Generator | None = None) -> None:
        """Draw W ~ N(0, 1) then b ~ U[0, 2pi), in the official order."""
        weight = torch.randn(self.rff_weight.shape, generator=generator)
        bias = torch.empty(self.rff_bias.shape).uniform_(0, 2 * math.pi, generator=generator)
        self.rff_weight.copy_(weight)
        self.rff_bias.copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.redraw_rff:
            self.draw_rff()
        projected = F.conv2d(self.faix(x), self.rff_weight[:, :, None, None], self.rff_bias)
        features = torch.cos(projected) * self.rff_scale
        return self.AGB(self.MRFRB_1(features), self.MRFRB_2(x), self.MRFRB_3(x)) + x


class DehazeBlock(nn.Module):
    """conv -> ReLU -> +x -> conv -> MRFEB1 -> +x at the bottleneck."""

    def __init__(self, channels: int = CHANNELS, rff_seed: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.MRFEB1 = MultiReceptiveFieldBlock(channels, rff_seed=rff_seed)

    def forward(self, x: Tensor) -> Tensor:
        res = torch.relu(self.conv1(x)) + x
        return self.MRFEB1(self.conv2(res)) + x
