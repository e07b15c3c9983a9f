"""Small building blocks shared by the encoder and decoder."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tokens_to_image(x: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) feature map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


def image_to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) feature map -> (B, H*W, C) tokens."""
    return x.flatten(2).transpose(1, 2)


# How attention is written into an ONNX export: "multihead" (one com.microsoft.MultiHeadAttention node,
# ONNX Runtime's fused kernel, which never materialises the score matrix) or "tensorrt" (one opset-23
# Attention node, TensorRT's attention layer, for the (heads, head size) pairs named native; elsewhere the
# Mul(Q, scale) -> MatMul -> Softmax -> MatMul chain TensorRT fuses, since it builds that layer only where
# it has a dedicated kernel).
ATTENTION_FORMS = ("multihead", "tensorrt")
_export_form: tuple[str, frozenset[tuple[int, int]]] = ("tensorrt", frozenset())


@contextmanager
def attention_export_form(form: str, native: frozenset[tuple[int, int]] = frozenset()) -> Iterator[None]:
    """Export every attention in `form` while the context is open; `native`: the (heads, head size) pairs
    the "tensorrt" form writes as Attention nodes."""
    global _export_form
    if form not in ATTENTION_FORMS:
        raise ValueError(f"attention form must be one of {ATTENTION_FORMS}, got {form!r}")
    previous, _export_form = _export_form, (form, frozenset(native))
    try:
        yield
    finally:
        _export_form = previous


def attention_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(heads, head size) of every attention block in `model`, in module order."""
    return [(m.num_heads, m.q.out_features // m.num_heads) for m in model.modules()
            if hasattr(m, "num_heads") and isinstance(getattr(m, "q", None), nn.Linear)]


class _MultiHeadAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v on (B, S, heads * d) tensors; exported as one com.microsoft node."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, heads: int, scale: float) -> Tensor:
        batch, queries, _ = q.shape

        def split(t: Tensor) -> Tensor:
            return t.reshape(batch, t.shape[1], heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
        return out.transpose(1, 2).reshape(batch, queries, -1)

    @staticmethod
    def symbolic(g, q, k, v, heads: int, scale: float):
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=heads, scale_f=scale)
        out.setType(q.type())  # (B, S, heads * d), as Q: the exporter cannot infer a custom op's type
        return out


class _OnnxAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v on (B, heads, S, d) tensors; exported as one opset-23 Attention node."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    @staticmethod
    def symbolic(g, q, k, v, scale: float):
        out = g.op("Attention", q, k, v, scale_f=scale)
        out.setType(q.type())  # (B, heads, S_q, d), as Q
        return out


def scaled_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(q k^T * scale) v over (B, heads, S, d) tensors.

    In the "tensorrt" export form, outside its native pairs, Q is scaled before
    the first MatMul: the MatMul -> Softmax -> MatMul chain that TensorRT fuses
    into one flash-attention kernel. Eager PyTorch takes its own fused kernel.
    """
    if not torch.onnx.is_in_onnx_export():
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    form, native = _export_form
    if form == "tensorrt":
        if (int(q.shape[1]), int(q.shape[3])) in native:
            return _OnnxAttention.apply(q, k, v, float(scale))
        return torch.matmul(torch.softmax(torch.matmul(q * scale, k.transpose(-2, -1)), dim=-1), v)
    batch, heads, queries, _ = q.shape

    def merge(t: Tensor) -> Tensor:  # the Transposes cancel against the callers' in ONNX Runtime
        return t.transpose(1, 2).reshape(batch, t.shape[2], -1)

    out = _MultiHeadAttention.apply(merge(q), merge(k), merge(v), int(heads), float(scale))
    return out.reshape(batch, queries, heads, -1).transpose(1, 2)


def nearest_token_index(in_len: int, out_len: Tensor | int) -> Tensor:
    """Source indices of F.interpolate(mode='nearest') resizing a length in_len to out_len.

    PyTorch computes floor(dst * float32(in / out)) in float32 and clamps to
    in - 1; this reproduces that arithmetic bit for bit with ops that export
    with a dynamic out_len (Range, Mul, Floor, Cast).
    """
    out = torch.as_tensor(out_len, dtype=torch.float32)
    scale = torch.tensor(float(in_len), dtype=torch.float32) / out
    dst = torch.arange(out_len, dtype=torch.float32)
    return torch.floor(dst * scale).to(torch.int64).clamp(max=in_len - 1)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution + LayerNorm that turns a feature map into tokens."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # eps 1e-5, as in the official code

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[2], x.shape[3]
        return self.norm(image_to_tokens(x)), height, width


class DWConv(nn.Module):
    """Depth-wise 3x3 convolution applied to tokens laid out on their grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return image_to_tokens(self.dwconv(tokens_to_image(x, height, width)))


class Mlp(nn.Module):
    """Mix-FFN: Linear -> depth-wise conv -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), height, width)))
