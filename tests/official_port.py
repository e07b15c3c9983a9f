"""A port of the official KA-Net formulation (testcode/LD_model1.py + transweather_model.py).

Written independently of training/models so the tests can hold ours against it:
explicit (q @ k^T) * scale attention, F.interpolate on the task queries, the
4-D `.T` random-feature algebra, and the tail's negative-F.pad crops behind
shape checks. The random features are injected (`rff_weight`, `rff_bias`)
instead of redrawn each pass; nothing else differs. Module names follow the
official state_dict so our weights load strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _t(x):  # what `.T` does on a tensor of any rank: reverse every dimension
    return x.permute(*reversed(range(x.ndim)))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size, stride, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class DWConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        return self.dwconv(x.transpose(1, 2).view(B, C, H, W)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.dwconv, self.act, self.fc2 = nn.Linear(dim, hidden), DWConv(hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x, H, W):
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.num_heads, self.scale, self.sr_ratio = num_heads, (dim // num_heads) ** -0.5, sr_ratio
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, dim * 2), nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x_ = self.norm(self.sr(x.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1))
            kv = self.kv(x_).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        else:
            kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class AttentionDec(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, dim * 2), nn.Linear(dim, dim)
        self.task_query = nn.Parameter(torch.randn(1, 48, dim))

    def forward(self, x, H, W):
        B, N, C = x.shape
        task_q = self.task_query
        if B > 1:
            task_q = task_q.unsqueeze(0).repeat(B, 1, 1, 1).squeeze(1)
        q = self.q(task_q).reshape(B, task_q.shape[1], self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q = F.interpolate(q, size=(v.shape[2], v.shape[3]))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, decoder=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = AttentionDec(dim, num_heads) if decoder else Attention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x), H, W)


def _blocks(n, *args, **kw):
    return nn.ModuleList([Block(*args, **kw) for _ in range(n)])


class Tenc(nn.Module):
    def __init__(self):
        super().__init__()
        d = [64, 128, 320, 512]
        self.patch_embed1 = OverlapPatchEmbed(7, 4, 3, d[0])
        self.patch_embed2 = OverlapPatchEmbed(3, 2, d[0], d[1])
        self.patch_embed3 = OverlapPatchEmbed(3, 2, d[1], d[2])
        self.patch_embed4 = OverlapPatchEmbed(3, 2, d[2], d[3])
        self.mini_patch_embed1 = OverlapPatchEmbed(3, 2, d[0], d[1])
        self.mini_patch_embed2 = OverlapPatchEmbed(3, 2, d[1], d[2])
        self.mini_patch_embed3 = OverlapPatchEmbed(3, 2, d[2], d[3])
        self.mini_patch_embed4 = OverlapPatchEmbed(3, 2, d[0], d[3])
        self.block1, self.norm1 = _blocks(2, d[0], 1, 2, 4), nn.LayerNorm(d[0], eps=1e-6)
        self.patch_block1, self.pnorm1 = _blocks(1, d[1], 1, 2, 4), nn.LayerNorm(d[1], eps=1e-6)
        self.block2, self.norm2 = _blocks(2, d[1], 2, 2, 2), nn.LayerNorm(d[1], eps=1e-6)
        self.patch_block2, self.pnorm2 = _blocks(1, d[2], 2, 2, 2), nn.LayerNorm(d[2], eps=1e-6)
        self.block3, self.norm3 = _blocks(2, d[2], 4, 2, 2), nn.LayerNorm(d[2], eps=1e-6)
        self.patch_block3, self.pnorm3 = _blocks(1, d[3], 2, 2, 2), nn.LayerNorm(d[3], eps=1e-6)
        self.block4, self.norm4 = _blocks(2, d[3], 4, 2, 1), nn.LayerNorm(d[3], eps=1e-6)

    def forward(self, x):
        B, d, outs = x.shape[0], [64, 128, 320, 512], []
        x1, H1, W1 = self.patch_embed1(x)
        x2, H2, W2 = self.mini_patch_embed1(x1.permute(0, 2, 1).reshape(B, d[0], H1, W1))
        for blk in self.block1:
            x1 = blk(x1, H1, W1)
        x1 = self.norm1(x1).reshape(B, H1, W1, -1).permute(0, 3, 1, 2).contiguous()
        for blk in self.patch_block1:
            x2 = blk(x2, H2, W2)
        x2 = self.pnorm1(x2).reshape(B, H2, W2, -1).permute(0, 3, 1, 2).contiguous()
        outs.append(x1)
        stages = [(self.patch_embed2, self.mini_patch_embed2, self.block2, self.norm2, self.patch_block2, self.pnorm2),
                  (self.patch_embed3, self.mini_patch_embed3, self.block3, self.norm3, self.patch_block3, self.pnorm3)]
        for i, (pe, mpe, blocks, norm, pblocks, pnorm) in enumerate(stages, start=1):
            x1, H1, W1 = pe(x1)
            x1 = x1.permute(0, 2, 1).reshape(B, d[i], H1, W1) + x2
            x2, H2, W2 = mpe(x1)
            x1 = x1.view(x1.shape[0], x1.shape[1], -1).permute(0, 2, 1)
            for blk in blocks:
                x1 = blk(x1, H1, W1)
            x1 = norm(x1).reshape(B, H1, W1, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x1)
            for blk in pblocks:
                x2 = blk(x2, H2, W2)
            x2 = pnorm(x2).reshape(B, H2, W2, -1).permute(0, 3, 1, 2).contiguous()
        x1, H1, W1 = self.patch_embed4(x1)
        x1 = x1.permute(0, 2, 1).reshape(B, d[3], H1, W1) + x2
        x1 = x1.view(x1.shape[0], x1.shape[1], -1).permute(0, 2, 1)
        for blk in self.block4:
            x1 = blk(x1, H1, W1)
        outs.append(self.norm4(x1).reshape(B, H1, W1, -1).permute(0, 3, 1, 2).contiguous())
        return outs


class Tdec(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed1 = OverlapPatchEmbed(3, 2, 512, 512)
        self.block1 = _blocks(3, 512, 8, 4, 1, decoder=True)
        self.norm1 = nn.LayerNorm(512, eps=1e-6)

    def forward(self, x):
        x = x[3]
        B = x.shape[0]
        x, H, W = self.patch_embed1(x)
        for blk in self.block1:
            x = blk(x, H, W)
        return [self.norm1(x).reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()]


class _Conv(nn.Module):
    def __init__(self, cin, cout, transposed=False, reflect=False):
        super().__init__()
        self.reflect = reflect
        self.conv2d = nn.ConvTranspose2d(cin, cout, 2, stride=2) if transposed else nn.Conv2d(cin, cout, 3, 1, 0 if reflect else 1)

    def forward(self, x):
        return self.conv2d(nn.ReflectionPad2d(1)(x) if self.reflect else x)


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2, self.relu = _Conv(c, c), _Conv(c, c), nn.ReLU()

    def forward(self, x):
        return torch.add(self.conv2(self.relu(self.conv1(x))), x)


def _official_crop(ref, res):
    if ref.shape[3] != res.shape[3] and ref.shape[2] != res.shape[2]:
        return F.pad(res, (0, -1, 0, -1), "constant", 0)
    if ref.shape[3] != res.shape[3] and ref.shape[2] == res.shape[2]:
        return F.pad(res, (0, -1, 0, 0), "constant", 0)
    if ref.shape[3] == res.shape[3] and ref.shape[2] != res.shape[2]:
        return F.pad(res, (0, 0, 0, -1), "constant", 0)
    return res


class convprojection(nn.Module):
    def __init__(self):
        super().__init__()
        self.convd32x = _Conv(512, 512, True)
        self.convd16x = _Conv(512, 320, True)
        self.dense_4 = nn.Sequential(ResidualBlock(320))
        self.convd8x = _Conv(320, 128, True)
        self.dense_3 = nn.Sequential(ResidualBlock(128))
        self.convd4x = _Conv(128, 64, True)
        self.dense_2 = nn.Sequential(ResidualBlock(64))
        self.convd2x = _Conv(64, 16, True)
        self.dense_1 = nn.Sequential(ResidualBlock(16))
        self.convd1x = _Conv(16, 8, True)
        self.conv_output = _Conv(8, 3)

    def forward(self, x1, x2):
        res16x = _official_crop(x1[3], self.convd32x(x2[0])) + x1[3]
        res16x = _official_crop(x1[2], self.convd16x(res16x))
        res8x = self.convd8x(self.dense_4(res16x) + x1[2])
        res4x = self.convd4x(self.dense_3(res8x) + x1[1])
        res2x = self.convd2x(self.dense_2(res4x) + x1[0])
        return self.convd1x(self.dense_1(res2x))


class SELayer(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.avg_pool, self.Sigmoid3 = nn.AdaptiveAvgPool2d(1), nn.Sigmoid()
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(inplace=True), nn.Linear(c // r, c, bias=False))
        self.fc1 = nn.Sequential(nn.Conv2d(c, c // r, 3, 1, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(c // r, c, 3, 1, 1, bias=False))

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        return x * self.Sigmoid3(y * self.fc1(x)).expand_as(x)


class SAM_cat(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_1 = nn.Conv2d(c, 1, 1, 1, 0)
        self.conv_sigm = nn.Sequential(nn.Conv2d(2, 1, 1, 1, 0), nn.ReLU(inplace=True), nn.Conv2d(1, 1, 1, 1, 0), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_sigm(torch.cat([torch.mean(x, dim=1, keepdim=True), self.conv_1(x)], 1))


def _cbr(cin, cout, k, dil=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, dil if k == 3 else 0, dilation=dil), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SSB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.CAU, self.SAU, self.conv_out = SELayer(c), SAM_cat(c), _cbr(2 * c, c, 1)

    def forward(self, x):
        return self.conv_out(torch.cat([self.CAU(x), self.SAU(x)], 1))


class DFconvResBlock(nn.Module):
    def __init__(self, c, DF):
        super().__init__()
        self.DFconv1, self.DFconv2, self.conv_cat, self.AM = _cbr(c, c, 3, DF), _cbr(c, c, 3, DF), _cbr(2 * c, c, 1), SSB(c)

    def forward(self, x):
        y = self.DFconv1(x)
        return self.AM(self.conv_cat(torch.cat([y, self.DFconv2(y)], 1))) + x


class AGB_mean(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(inplace=True), nn.Linear(3, 3, bias=False), nn.Sigmoid())
        self.conv_out = _cbr(c, c, 1)

    def forward(self, x1, x2, x3):
        y = torch.cat([torch.mean(v, dim=1, keepdim=True) for v in (x1, x2, x3)], 1)
        b = y.size(0)
        y = self.fc(self.avg_pool(y).view(b, 3)).view(b, 3, 1, 1)
        return self.conv_out(x1 * y[:, 0:1].expand_as(x1) + x2 * y[:, 1:2].expand_as(x2) + x3 * y[:, 2:3].expand_as(x3))


class MRFEB1(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.MRFRB_1, self.MRFRB_2, self.MRFRB_3 = DFconvResBlock(c, 1), DFconvResBlock(c, 3), DFconvResBlock(c, 5)
        self.AGB = AGB_mean(c)
        self.faix = _cbr(c, c // 8, 1)
        self.dim_kernel = c
        self.rff_weight = None  # injected: the official code draws torch.randn(C, C/8) here every pass
        self.rff_bias = None    # injected: ... and uniform_(0, 2 pi) of length C

    def forward(self, x):
        X_ = self.faix(x)
        N = X_.shape[0]
        B = self.rff_bias.repeat(N, 1)
        X_feature1 = torch.sqrt(torch.Tensor([2 / self.dim_kernel]))
        X_feature2 = torch.cos(torch.matmul(self.rff_weight, _t(X_)) + B.T)
        X_feature = _t(X_feature1 * X_feature2)
        return self.AGB(self.MRFRB_1(X_feature), self.MRFRB_2(x), self.MRFRB_3(x)) + x


class DehazeBlock(nn.Module):
    def __init__(self, dim=512):
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.MRFEB1 = MRFEB1(512)

    def forward(self, x):
        res = self.act1(self.conv1(x)) + x
        res = self.MRFEB1(self.conv2(res))
        res += x
        return res


class Dehaze(nn.Module):
    def __init__(self):
        super().__init__()
        self.Tencoder, self.Tdecoder, self.convtail = Tenc(), Tdec(), convprojection()
        self.active, self.clean = nn.Tanh(), _Conv(8, 3, reflect=True)
        self.block = DehazeBlock()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, a):
        add = self.Tencoder(a)
        z = torch.flatten(self.avgpool(add[3]), 1)
        xd0 = self.block(add[3])
        x_u = self.Tdecoder([add[0], add[1], add[2], xd0])
        return self.active(self.clean(self.convtail(add, x_u))), z
