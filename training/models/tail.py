"""Convolutional projection tail: transposed convs back to full resolution with skips."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class UpsampleConvLayer(nn.Module):
    """2x2 stride-2 transposed convolution."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv2d = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(x)


class ConvLayer(nn.Module):
    """3x3 convolution, zero padded."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(in_ch, out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(x)


class ReflectConvLayer(nn.Module):
    """3x3 convolution on a reflect-padded input (the network's last layer)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(in_ch, out_ch, 3, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels)
        self.conv2 = ConvLayer(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(torch.relu(self.conv1(x))) + x


def crop_to(x: Tensor, ref: Tensor) -> Tensor:
    """x cut to ref's height and width.

    A stride-2 level of odd size upsamples to one pixel too many; the official
    code trims it with a negative F.pad behind Python shape checks. A slice to
    the skip's size is the same operation for every size and exports as one Slice.
    """
    return x[:, :, : ref.shape[2], : ref.shape[3]]


class ConvProjection(nn.Module):
    """convprojection: decoder output up through the encoder levels to full resolution.

    conv_output is present in the official state_dict but never called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.convd32x = UpsampleConvLayer(512, 512)
        self.convd16x = UpsampleConvLayer(512, 320)
        self.dense_4 = nn.Sequential(ResidualBlock(320))
        self.convd8x = UpsampleConvLayer(320, 128)
        self.dense_3 = nn.Sequential(ResidualBlock(128))
        self.convd4x = UpsampleConvLayer(128, 64)
        self.dense_2 = nn.Sequential(ResidualBlock(64))
        self.convd2x = UpsampleConvLayer(64, 16)
        self.dense_1 = nn.Sequential(ResidualBlock(16))
        self.convd1x = UpsampleConvLayer(16, 8)
        self.conv_output = ConvLayer(8, 3)

    def forward(self, encoder_outs: list[Tensor], decoded: Tensor) -> Tensor:
        x = crop_to(self.convd32x(decoded), encoder_outs[3]) + encoder_outs[3]
        x = self.dense_4(crop_to(self.convd16x(x), encoder_outs[2])) + encoder_outs[2]
        x = self.dense_3(crop_to(self.convd8x(x), encoder_outs[1])) + encoder_outs[1]
        x = self.dense_2(crop_to(self.convd4x(x), encoder_outs[0])) + encoder_outs[0]
        return self.convd1x(self.dense_1(self.convd2x(x)))
