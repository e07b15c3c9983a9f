"""Transformer decoder whose attention queries are learnable task queries."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import Mlp, OverlapPatchEmbed, nearest_token_index, scaled_attention, tokens_to_image

DIM = 512
NUM_HEADS = 8
DEPTH = 3
MLP_RATIO = 4
NUM_TASK_QUERIES = 48
BLOCK_NORM_EPS = 1e-6


class TaskQueryAttention(nn.Module):
    """Attention with 48 learned queries, resized along the token axis to the key count.

    The official code resizes the projected queries with F.interpolate(mode='nearest');
    an index gather with the same float32 index arithmetic gives identical values and
    exports with a dynamic token count.
    """

    def __init__(self, dim: int = DIM, num_heads: int = NUM_HEADS) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.task_query = nn.Parameter(torch.randn(1, NUM_TASK_QUERIES, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(self.task_query).reshape(1, NUM_TASK_QUERIES, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(batch, tokens, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = q[:, :, nearest_token_index(NUM_TASK_QUERIES, tokens)].expand(batch, -1, -1, -1)
        out = scaled_attention(q, k, v, self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))



class DecoderBlock(nn.Module):
    """Pre-norm block: task-query attention and Mix-FFN, each with a residual."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = TaskQueryAttention(dim)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, dim * MLP_RATIO)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x), height, width)


class TransformerDecoder(nn.Module):
    """One more stride-2 patch embedding of the bottleneck, then the task-query blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed1 = OverlapPatchEmbed(3, 2, DIM, DIM)
        self.block1 = nn.ModuleList(DecoderBlock() for _ in range(DEPTH))
        self.norm1 = nn.LayerNorm(DIM, eps=BLOCK_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x, height, width = self.patch_embed1(x)
        for block in self.block1:
            x = block(x, height, width)
        return tokens_to_image(self.norm1(x), height, width)
