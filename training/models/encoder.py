"""Transweather-style transformer encoder with the intra-patch branch."""
from __future__ import annotations

from torch import Tensor, nn

from .layers import Mlp, OverlapPatchEmbed, image_to_tokens, scaled_attention, tokens_to_image

EMBED_DIMS = (64, 128, 320, 512)
NUM_HEADS = (1, 2, 4, 4)
SR_RATIOS = (4, 2, 2, 1)
DEPTHS = (2, 2, 2, 2)
MLP_RATIO = 2
BLOCK_NORM_EPS = 1e-6


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced map."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, as in the official code

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(x).reshape(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(image_to_tokens(self.sr(tokens_to_image(x, height, width))))
        k, v = self.kv(x).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = scaled_attention(q, k, v, self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: attention and Mix-FFN, each with a residual."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)


def _stage(dim: int, num_heads: int, sr_ratio: int, depth: int) -> nn.ModuleList:
    return nn.ModuleList(EncoderBlock(dim, num_heads, sr_ratio) for _ in range(depth))


class TransformerEncoder(nn.Module):
    """Four stages (strides 4, 8, 16, 32) with an intra-patch branch feeding each next stage.

    Attribute names follow the official state_dict (Tencoder.*). mini_patch_embed4
    exists in the official model but is never called; it is kept for checkpoint
    compatibility.
    """

    def __init__(self) -> None:
        super().__init__()
        d = EMBED_DIMS
        self.patch_embed1 = OverlapPatchEmbed(7, 4, 3, d[0])
        self.patch_embed2 = OverlapPatchEmbed(3, 2, d[0], d[1])
        self.patch_embed3 = OverlapPatchEmbed(3, 2, d[1], d[2])
        self.patch_embed4 = OverlapPatchEmbed(3, 2, d[2], d[3])
        self.mini_patch_embed1 = OverlapPatchEmbed(3, 2, d[0], d[1])
        self.mini_patch_embed2 = OverlapPatchEmbed(3, 2, d[1], d[2])
        self.mini_patch_embed3 = OverlapPatchEmbed(3, 2, d[2], d[3])
        self.mini_patch_embed4 = OverlapPatchEmbed(3, 2, d[0], d[3])

        self.block1 = _stage(d[0], NUM_HEADS[0], SR_RATIOS[0], DEPTHS[0])
        self.norm1 = nn.LayerNorm(d[0], eps=BLOCK_NORM_EPS)
        self.block2 = _stage(d[1], NUM_HEADS[1], SR_RATIOS[1], DEPTHS[1])
        self.norm2 = nn.LayerNorm(d[1], eps=BLOCK_NORM_EPS)
        self.block3 = _stage(d[2], NUM_HEADS[2], SR_RATIOS[2], DEPTHS[2])
        self.norm3 = nn.LayerNorm(d[2], eps=BLOCK_NORM_EPS)
        self.block4 = _stage(d[3], NUM_HEADS[3], SR_RATIOS[3], DEPTHS[3])
        self.norm4 = nn.LayerNorm(d[3], eps=BLOCK_NORM_EPS)

        # Intra-patch blocks: one each, with the head count and reduction of the
        # previous stage (the official configuration, reproduced as is).
        self.patch_block1 = _stage(d[1], NUM_HEADS[0], SR_RATIOS[0], 1)
        self.pnorm1 = nn.LayerNorm(d[1], eps=BLOCK_NORM_EPS)
        self.patch_block2 = _stage(d[2], NUM_HEADS[1], SR_RATIOS[1], 1)
        self.pnorm2 = nn.LayerNorm(d[2], eps=BLOCK_NORM_EPS)
        self.patch_block3 = _stage(d[3], NUM_HEADS[1], SR_RATIOS[2], 1)
        self.pnorm3 = nn.LayerNorm(d[3], eps=BLOCK_NORM_EPS)

    @staticmethod
    def _run(blocks: nn.ModuleList, norm: nn.LayerNorm, x: Tensor, height: int, width: int) -> Tensor:
        for block in blocks:
            x = block(x, height, width)
        return tokens_to_image(norm(x), height, width)

    def forward(self, x: Tensor) -> list[Tensor]:
        main_embeds = (self.patch_embed2, self.patch_embed3, self.patch_embed4)
        mini_embeds = (self.mini_patch_embed1, self.mini_patch_embed2, self.mini_patch_embed3)
        main_stages = ((self.block1, self.norm1), (self.block2, self.norm2),
                       (self.block3, self.norm3), (self.block4, self.norm4))
        patch_stages = ((self.patch_block1, self.pnorm1), (self.patch_block2, self.pnorm2),
                        (self.patch_block3, self.pnorm3))

        tokens, height, width = self.patch_embed1(x)
        feature = tokens_to_image(tokens, height, width)
        outs = []
        for stage in range(4):
            if stage > 0:
                tokens, height, width = main_embeds[stage - 1](outs[-1])
                feature = tokens_to_image(tokens, height, width) + patch
                tokens = image_to_tokens(feature)
            if stage < 3:
                patch_tokens, patch_h, patch_w = mini_embeds[stage](feature)
            outs.append(self._run(*main_stages[stage], tokens, height, width))
            if stage < 3:
                patch = self._run(*patch_stages[stage], patch_tokens, patch_h, patch_w)
        return outs
