"""Losses on tiny tensors, the VGG19 feature extractor, and stable-learning sample reweighting."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from training.losses import (GaussianContrastiveLoss, charbonnier_per_sample, chroma_per_sample, colour_per_sample,
                             gaussian_blur, l1_per_sample, ssim_per_sample)
from training.reweighting import ReweightConfig, SampleReweighter, decorrelation_objective, fourier_features
from training.vgg import RELU_X_1, VGG19Features

# torchvision's vgg19().features: conv layers sit at these indices (16 convs, the last three after relu5_1).
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def _images(seed: int, batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features()  # no weights here: random features, as the warning says


@pytest.mark.parametrize("loss", [l1_per_sample, charbonnier_per_sample])
def test_reconstruction_losses_per_sample(loss):
    clear = _images(0)
    pred = (clear + 0.1 * torch.randn_like(clear)).requires_grad_()
    values = loss(pred, clear)
    assert values.shape == (2,) and (values > 0).all()
    values.sum().backward()
    assert pred.grad.abs().sum() > 0
    assert float(loss(clear, clear).max()) <= 1.001e-3 < float(values.detach().min())  # perfect: 0 (Charbonnier: eps)


def test_structure_and_colour_terms_score_what_they_name():
    clear = _images(3)
    noise = torch.randn_like(clear)
    assert torch.allclose(ssim_per_sample(clear, clear), torch.ones(2), atol=1e-5)
    assert (ssim_per_sample(clear + 0.2 * noise, clear) < ssim_per_sample(clear + 0.05 * noise, clear)).all()
    assert (ssim_per_sample(clear + 0.05 * noise, clear) < 0.99).all()
    darker, bluer = clear * 0.7, clear + torch.tensor([0.0, 0.0, 0.1])[:, None, None]
    assert float(colour_per_sample(darker, clear).max()) < 1e-5 < float(colour_per_sample(bluer, clear).min())


def test_chroma_term_costs_casts_not_lightness_or_fine_texture():
    clear = _images(4)
    assert float(chroma_per_sample(clear + 0.1, clear).max()) < 1e-6  # lighter, same colour
    bluer = clear + torch.tensor([0.0, 0.0, 0.1])[:, None, None]
    torch.testing.assert_close(chroma_per_sample(bluer, clear), torch.full((2,), 0.05))  # (R+G)/2 - B down 0.1
    checker = 0.1 * ((torch.arange(32)[:, None] + torch.arange(32)) % 2 * 2 - 1).float()  # +-0.1 red, pixel by pixel
    textured = clear + torch.stack([checker, torch.zeros_like(checker), torch.zeros_like(checker)])
    assert float(chroma_per_sample(textured, clear).max()) < 1e-6 < 0.02 < float(l1_per_sample(textured, clear).min())
    pred = bluer.clone().requires_grad_()
    chroma_per_sample(pred, clear).sum().backward()
    assert pred.grad.abs().sum() > 0


def test_gaussian_blur_keeps_constants_and_smooths():
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat, atol=1e-6)
    noise = _images(1, 1)
    blurred = gaussian_blur(noise, 1.5)
    assert blurred.shape == noise.shape and blurred.std() < 0.5 * noise.std()
    assert abs(float(blurred.mean() - noise.mean())) < 0.02


def test_vgg_without_weights_warns_and_matches_torchvision_layout(caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="training.vgg"):
        net = VGG19Features()
    assert not net.pretrained and "random features" in caplog.text
    convs = [i for i in TORCHVISION_CONVS if i < RELU_X_1[-1]]
    assert list(net.state_dict()) == [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")]
    assert [f.shape[1] for f in net(_images(2, 1))] == [64, 128, 256, 512, 512]

    # A file shaped like torchvision's vgg19-dcbb9e9d.pth (all 16 convs and the classifier) loads.
    widths = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    state, channels = {"classifier.0.weight": torch.zeros(8, 8)}, 3  # ignored: only `features` is used
    for index, width in zip(TORCHVISION_CONVS, widths):
        state[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(width)
        channels = width
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    loaded = VGG19Features(path)
    assert loaded.pretrained and torch.equal(loaded.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.save({"features.0.weight": state["features.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not VGG19 features"):
        VGG19Features(tmp_path / "partial.pth")


def test_contrastive_loss_prefers_the_clear_image_and_trains_the_output(vgg):
    clear, hazy = _images(3), _images(4) * 0.3 + 0.6
    loss = GaussianContrastiveLoss(vgg)
    torch.manual_seed(0)
    perfect = loss(clear.clone(), clear, hazy)
    halfway = (0.5 * clear + 0.5 * hazy).requires_grad_()
    torch.manual_seed(0)
    worse = loss(halfway, clear, hazy)
    assert float(perfect) == pytest.approx(0.0, abs=1e-6) and float(worse.detach()) > 0.05
    worse.backward()
    assert halfway.grad is not None and halfway.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="negatives"):
        GaussianContrastiveLoss(vgg, negatives=("rain",))


def _correlated(batch: int = 8, dims: int = 512, seed: int = 0) -> torch.Tensor:
    """Features where most samples share one latent factor (strong cross-dimension correlation)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 1, generator=g) * torch.randn(1, dims, generator=g) + 0.3 * torch.randn(batch, dims, generator=g)
    z[-2:] = torch.randn(2, dims, generator=g)
    return z


def _mean_objective(z: torch.Tensor, weights: torch.Tensor, draws: int = 10) -> float:
    g = torch.Generator().manual_seed(99)
    total = 0.0
    for _ in range(draws):
        w = torch.randn(1, generator=g)
        b = 2 * math.pi * torch.rand(z.shape[0], z.shape[1], 1, generator=g)
        total += float(decorrelation_objective(fourier_features(z, w, b), weights))
    return total / draws


@pytest.mark.parametrize("rows, dims", [(132, 64), (12, 5)])  # Gram form on either side
def test_decorrelation_objective_is_the_weighted_covariance_off_diagonal(rows, dims):
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, dims, 1, generator=g, dtype=torch.float64)
    w = torch.softmax(torch.randn(rows, generator=g, dtype=torch.float64), 0)
    cov = np.cov(x[:, :, 0].numpy().T, aweights=w.numpy(), bias=True)
    off_diagonal = (cov ** 2).sum() - (np.diag(cov) ** 2).sum()
    assert float(decorrelation_objective(x, w)) == pytest.approx(off_diagonal, rel=1e-10)


def test_reweighting_lowers_the_decorrelation_objective_and_weights_sum_to_batch():
    z = _correlated()
    reweighter = SampleReweighter(ReweightConfig(), z.shape[1], seed=0)
    logits, history = reweighter.learn_logits(z)
    assert len(history) == ReweightConfig().inner_steps
    learned = torch.softmax(logits, 0)
    uniform = torch.full((z.shape[0],), 1 / z.shape[0])
    assert _mean_objective(z, learned) < 0.97 * _mean_objective(z, uniform)

    weights = SampleReweighter(ReweightConfig(), z.shape[1], seed=0)(z)
    assert weights.shape == (8,) and (weights > 0).all() and not weights.requires_grad
    assert float(weights.sum()) == pytest.approx(8.0, abs=1e-5)


def test_reweighting_memory_ring_and_exact_state_round_trip():
    cfg = ReweightConfig(memory=6, inner_steps=4)
    a = SampleReweighter(cfg, 16, seed=1)
    for step in range(3):  # 3 steps x batch 4 over 6 slots: full after two steps, then blended
        a(_correlated(4, 16, seed=step))
        assert int(a.filled.sum()) == min(6, 4 * (step + 1))
    assert a.cursor == 12 % 6
    b = SampleReweighter(cfg, 16, seed=7)
    b.load_state_dict(a.state_dict())
    z = _correlated(4, 16, seed=10)
    assert torch.equal(a(z), b(z))
    with pytest.raises(ValueError, match="larger than the reweighting memory"):
        a(_correlated(8, 16))
