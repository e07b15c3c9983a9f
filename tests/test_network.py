"""The KA-Net network: layout, determinism, padding, and equality with the official formulation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from official_port import Dehaze
from training import PAD_MULTIPLE, KANet
from training.models.layers import nearest_token_index

from conftest import DATA


def test_state_dict_matches_official_layout(model):
    reference = json.loads((DATA / "kanet_official_state_layout.json").read_text())
    state = model.state_dict()
    assert list(state) == list(reference["tensors"]) or set(state) == set(reference["tensors"])
    assert len(state) == 481
    assert {k: list(v.shape) for k, v in state.items()} == reference["tensors"]
    assert sum(p.numel() for p in model.parameters()) == reference["parameter_count"] == 55_657_426


def test_rff_drawn_in_official_order_from_seed():
    net = KANet(rff_seed=7)
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(512, 64, generator=g)
    bias = torch.empty(512).uniform_(0, 2 * math.pi, generator=g)
    mrfeb = net.block.MRFEB1
    assert torch.equal(mrfeb.rff_weight, weight)
    assert torch.equal(mrfeb.rff_bias, bias)
    assert not torch.equal(KANet(rff_seed=8).block.MRFEB1.rff_weight, weight)


def test_two_forward_passes_equal(model):
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        first, z1 = model(x)
        second, z2 = model(x)
    assert torch.equal(first, second) and torch.equal(z1, z2)
    assert first.shape == (1, 3, 64, 96) and z1.shape == (1, 512)


def test_training_redraw_changes_features_only_when_enabled():
    net = KANet().train()
    before = net.block.MRFEB1.rff_weight.clone()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    net(x)
    assert torch.equal(net.block.MRFEB1.rff_weight, before)
    net.set_rff_redraw(True)
    net(x)
    assert not torch.equal(net.block.MRFEB1.rff_weight, before)
    redrawn = net.block.MRFEB1.rff_weight.clone()
    net.eval()(x)
    assert torch.equal(net.block.MRFEB1.rff_weight, redrawn)


@pytest.mark.parametrize("n_out", [1, 2, 7, 47, 48, 49, 96, 97, 100, 255, 510, 511, 2040, 8160])
def test_token_index_matches_interpolate_nearest(n_out):
    source = torch.arange(48, dtype=torch.float32).reshape(1, 1, 48, 1)
    expected = F.interpolate(source, size=(n_out, 1)).flatten().to(torch.int64)
    assert torch.equal(nearest_token_index(48, n_out), expected)


def test_token_index_matches_interpolate_for_every_count_up_to_4096():
    source = torch.arange(48, dtype=torch.float32).reshape(1, 1, 48, 1)
    bad = [n for n in range(1, 4097)
           if not torch.equal(nearest_token_index(48, n), F.interpolate(source, size=(n, 1)).flatten().long())]
    assert bad == []


def _official_copy(model: KANet) -> Dehaze:
    official = Dehaze().eval()
    official.load_state_dict(model.state_dict(), strict=True)
    official.block.MRFEB1.rff_weight = model.block.MRFEB1.rff_weight.clone()
    official.block.MRFEB1.rff_bias = model.block.MRFEB1.rff_bias.clone()
    return official


# Multiples of 16, odd multiples included (48 = 3 x 16, 80 = 5 x 16, 112 = 7 x 16), where the
# official tail has to trim the stride-32 and stride-64 levels.
@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 48, 80), (1, 112, 144), (1, 80, 208), (3, 48, 112)])
def test_matches_official_formulation(model, shape):
    batch, height, width = shape
    official = _official_copy(model)
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height)) * 2 - 1
    with torch.no_grad():
        ours, z_ours = model(x)
        theirs, z_theirs = official(x)
    # README: equal to 5e-7 (measured 2.2e-7 to 3.9e-7), z to 2e-6 (measured up to 1.7e-6)
    assert (ours - theirs).abs().max().item() <= 5e-7
    assert (z_ours - z_theirs).abs().max().item() <= 2e-6


@pytest.mark.parametrize("size", [(2, 3), (3, 5), (4, 4)])
def test_bottleneck_matches_official(model, size):
    """The random-feature block on its own, where its effect is not diluted by the tail."""
    official = _official_copy(model)
    feature = torch.randn(2, 512, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.no_grad():
        assert (model.block(feature) - official.block(feature)).abs().max().item() <= 5e-7  # measured <= 4.8e-7


def test_official_comparison_detects_a_different_random_feature(model):
    """The equalities above are not vacuous: shifted feature phases show up far above 1e-5."""
    official = _official_copy(model)
    official.block.MRFEB1.rff_bias = official.block.MRFEB1.rff_bias + 0.5
    feature = torch.randn(1, 512, 3, 4, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert (model.block(feature) - official.block(feature)).abs().max().item() > 1e-2
        assert (model(x)[0] - official(x)[0]).abs().max().item() > 1e-5


@pytest.mark.parametrize("size", [(64, 96), (48, 80)])
def test_padded_path_equals_direct_on_multiples(model, size):
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.dehaze(x), model(x)[0].clamp(0, 1))


@pytest.mark.parametrize("size", [(50, 77), (65, 33), (33, 100), (100, 47)])
def test_padded_path_on_other_sizes_keeps_every_pixel(model, size):
    height, width = size
    x = torch.rand(1, 3, height, width) * 2 - 1
    pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
    # Independent reflect padding (numpy's 'reflect' does not repeat the edge pixel).
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect"))
    with torch.no_grad():
        out = model.dehaze(x)
        direct = model(padded)[0][:, :, :height, :width].clamp(0, 1)
    assert out.shape == x.shape
    assert torch.equal(out, direct)
    assert out.min() >= 0 and out.max() <= 1


def test_frames_below_minimum_size_are_refused(model):
    with pytest.raises(ValueError, match="at least 33 x 33"):
        model.dehaze(torch.zeros(1, 3, 32, 64))
