"""KA-Net (class `Dehaze` of the official code): encoder, bottleneck, decoder, tail."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.artifacts import MIN_FRAME_SIZE

from .bottleneck import CHANNELS, DehazeBlock
from .decoder import TransformerDecoder
from .encoder import TransformerEncoder
from .tail import ConvProjection, ReflectConvLayer

# Frames are padded to a multiple of 16: the encoder's strides 4, 8 and 16 then
# divide the frame exactly, and the two deeper levels (strides 32 and 64) are
# the ones the official tail was built to trim, so the network runs the way it
# was trained. 16 is also what the official test script crops to.
PAD_MULTIPLE = 16


def _init_transformer_weights(module: nn.Module) -> None:
    """The official initialisation of the transformer parts (SegFormer style)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def pad_to_multiple(x: Tensor, multiple: int = PAD_MULTIPLE) -> Tensor:
    """Reflect-pad the bottom and right of an NCHW tensor up to a multiple of `multiple`."""
    pad_h = (-x.shape[2]) % multiple
    pad_w = (-x.shape[3]) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


class KANet(nn.Module):
    """KA-Net dehazing network.

    forward(x) takes RGB in [-1, 1] (N x 3 x H x W, H and W multiples of 16) and
    returns (clean, z): clean is tanh output, read as a [0, 1] image once clamped;
    z (N x 512) is the pooled bottleneck feature used by sample reweighting.
    dehaze(x) takes any size, pads, runs and crops back, returning the clamped image.
    """

    def __init__(self, rff_seed: int = 0) -> None:
        super().__init__()
        self.rff_seed = rff_seed
        self.Tencoder = TransformerEncoder()
        self.Tdecoder = TransformerDecoder()
        self.convtail = ConvProjection()
        self.clean = ReflectConvLayer(8, 3)
        self.block = DehazeBlock(CHANNELS, rff_seed=rff_seed)
        self.Tencoder.apply(_init_transformer_weights)
        self.Tdecoder.apply(_init_transformer_weights)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.Tencoder(x)
        z = features[3].mean(dim=(2, 3))
        decoded = self.Tdecoder(self.block(features[3]))
        clean = torch.tanh(self.clean(self.convtail(features, decoded)))
        return clean, z

    def dehaze(self, x: Tensor) -> Tensor:
        """[-1, 1] RGB of any size >= 33 x 33 -> dehazed [0, 1] RGB of the same size."""
        height, width = x.shape[2], x.shape[3]
        if height < MIN_FRAME_SIZE or width < MIN_FRAME_SIZE:
            raise ValueError(f"KA-Net needs frames of at least {MIN_FRAME_SIZE} x {MIN_FRAME_SIZE}, got {height} x {width}")
        clean, _ = self(pad_to_multiple(x))
        return clean[:, :, :height, :width].clamp(0.0, 1.0)

    def rff_buffers(self) -> dict[str, Tensor]:
        """The random Fourier feature buffers, by state_dict-style name."""
        return {name: buf for name, buf in self.named_buffers() if name.rsplit(".", 1)[-1].startswith("rff_")}

    def set_rff_redraw(self, enabled: bool) -> None:
        """Redraw the random Fourier features at each training pass, as the official code does."""
        self.block.MRFEB1.redraw_rff = enabled
