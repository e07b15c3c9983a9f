"""Losses: per-sample reconstruction (for reweighting) and the Gaussian perceptual contrastive loss.

Images are [0, 1] RGB: KA-Net's tanh output is read as a [0, 1] image (the
official test code saves it as is), so the clear target is [0, 1] too.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vgg import VGG19Features

# relu1_1 ... relu5_1, as in AECR-Net's contrastive regularisation.
DEFAULT_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
NEGATIVES = ("hazy", "blur", "noise")


def l1_per_sample(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().flatten(1).mean(1)


def charbonnier_per_sample(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """sqrt((pred - target)^2 + eps^2): L1-like, but smooth at zero."""
    return torch.sqrt((pred - target).square() + eps * eps).flatten(1).mean(1)


def ssim_per_sample(pred: Tensor, target: Tensor, sigma: float = 1.5) -> Tensor:
    """Mean SSIM per sample (Gaussian window, data range 1), the structure term L1 alone leaves loose."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_p, mu_t = gaussian_blur(pred, sigma), gaussian_blur(target, sigma)
    var_p = gaussian_blur(pred * pred, sigma) - mu_p * mu_p
    var_t = gaussian_blur(target * target, sigma) - mu_t * mu_t
    cov = gaussian_blur(pred * target, sigma) - mu_p * mu_t
    ssim = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2))
    return ssim.flatten(1).mean(1)


def colour_per_sample(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean angle-like colour error per sample (1 - cosine of the RGB vectors): a cast costs even when
    brightness matches."""
    return (1 - F.cosine_similarity(pred + eps, target + eps, dim=1)).flatten(1).mean(1)


def chroma_per_sample(pred: Tensor, target: Tensor, block: int = 8) -> Tensor:
    """L1 error of the opponent colours R - G and (R + G) / 2 - B averaged over block x block cells: a regional or
    global cast costs in full, while per-pixel terms let it hide among texture errors; lightness does not enter."""
    def opponent(image: Tensor) -> Tensor:
        red, green, blue = image.unbind(1)
        return F.avg_pool2d(torch.stack([red - green, (red + green) / 2 - blue], 1), block, ceil_mode=True)

    return (opponent(pred) - opponent(target)).abs().flatten(1).mean(1)


RECONSTRUCTION: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"l1": l1_per_sample, "charbonnier": charbonnier_per_sample}


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of an NCHW batch (kernel radius 3 sigma, reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel[:, :, None, :], groups=x.shape[1])
    return F.conv2d(x, kernel[:, :, :, None], groups=x.shape[1])


class GaussianContrastiveLoss(nn.Module):
    """Perceptual contrastive loss in VGG19 feature space, with Gaussian-degraded negatives.

    Per layer l with weight w_l: w_l * |f(out) - f(clear)|_1 / (mean_k |f(out) - f(neg_k)|_1 + eps),
    summed (AECR-Net's form). Negatives: the hazy input, and the prediction itself
    Gaussian-blurred (sigma drawn from `blur_sigma`) and with Gaussian noise (std
    drawn from `noise_sigma`), both detached. Pulling the output away from its own
    blurred and noisy versions is how "Gaussian" enters here; the paper's exact
    form is unpublished, so this choice is ours and configurable.
    """

    def __init__(self, vgg: VGG19Features, layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
                 negatives: Sequence[str] = NEGATIVES, blur_sigma: tuple[float, float] = (1.0, 3.0),
                 noise_sigma: tuple[float, float] = (0.02, 0.1), eps: float = 1e-7) -> None:
        super().__init__()
        if len(layer_weights) != 5:
            raise ValueError(f"need 5 layer weights (relu1_1 ... relu5_1), got {len(layer_weights)}")
        unknown = sorted(set(negatives) - set(NEGATIVES))
        if unknown or not negatives:
            raise ValueError(f"negatives must be a non-empty subset of {NEGATIVES}, got {list(negatives)}")
        self.vgg = vgg
        self.layer_weights = tuple(layer_weights)
        self.negatives = tuple(negatives)
        self.blur_sigma, self.noise_sigma, self.eps = blur_sigma, noise_sigma, eps

    def _negative(self, kind: str, output: Tensor, hazy: Tensor) -> Tensor:
        if kind == "hazy":
            return hazy
        low, high = self.blur_sigma if kind == "blur" else self.noise_sigma
        sigma = low + (high - low) * float(torch.rand(()))
        if kind == "blur":
            return gaussian_blur(output, sigma)
        return (output + sigma * torch.randn_like(output)).clamp(0.0, 1.0)

    def forward(self, output: Tensor, clear: Tensor, hazy: Tensor) -> Tensor:
        batch = output.shape[0]
        with torch.no_grad():
            detached = output.detach().clamp(0.0, 1.0)
            references = [clear] + [self._negative(kind, detached, hazy) for kind in self.negatives]
            reference_features = self.vgg(torch.cat(references))  # one pass for all fixed images
        loss = output.new_zeros(())
        for weight, out_f, ref_f in zip(self.layer_weights, self.vgg(output), reference_features):
            positive, *negatives = ref_f.split(batch)
            d_positive = F.l1_loss(out_f, positive)
            d_negative = torch.stack([F.l1_loss(out_f, n) for n in negatives]).mean()
            loss = loss + weight * d_positive / (d_negative + self.eps)
        return loss
