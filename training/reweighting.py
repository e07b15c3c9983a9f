"""Stable-learning sample reweighting on KA-Net's bottleneck features z (after StableNet, CVPR 2021).

Per training step: per-sample logits (starting at 1) are optimised in a short
inner loop so that, under softmax weights over [batch; memory], the random
Fourier features of the feature dimensions are decorrelated (weighted
cross-covariance off the diagonal -> 0). A global memory of earlier features
and logits makes that statistic meaningful at small batch sizes. The task
loss of each sample is then multiplied by its weight; weights are
`batch * softmax(logits)`, so they sum to the batch size (uniform weights are
all ones). Defaults follow the public StableNet code.

Ours, for small batches: the memory is a ring of `memory` slots written `batch`
slots per step (a slot's first write stores the sample, later writes blend
`decay * old + (1 - decay) * new`), and only written slots take part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class ReweightConfig:
    enabled: bool = True
    memory: int = 128  # slots of earlier features and logits
    inner_steps: int = 20  # SGD steps on the logits per training step
    inner_lr: float = 1.0  # divided by 10 for the second half of the inner loop
    momentum: float = 0.9
    decorrelation_lambda: float = 70.0  # objective = decorrelation / lambda + sum(softmax(batch logits) ** power)
    weight_power: int = 2
    fourier_features: int = 1  # Fourier spaces per feature dimension
    memory_decay: float = 0.9


def fourier_features(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """StableNet's random Fourier features: x (n, r), w (F,), b (n, r, F) -> (n, r, F).

    Per sample, the projected values are min-max rescaled to [0, pi/2] over the
    feature dimensions, then sqrt(2/F) * (cos + sin).
    """
    mid = x[:, :, None] * w + b
    mid = mid - mid.amin(dim=1, keepdim=True)
    mid = mid / mid.amax(dim=1, keepdim=True).clamp_min(1e-12) * (math.pi / 2)
    return math.sqrt(2.0 / w.numel()) * (torch.cos(mid) + torch.sin(mid))


def decorrelation_objective(features: Tensor, weights: Tensor) -> Tensor:
    """Sum over Fourier spaces of the squared off-diagonal entries of the weighted covariance.

    features (n, r, F); weights (n,) sum to 1. With A = sqrt(w) * (x - weighted mean), the
    covariance is A^T A, and its squared Frobenius norm equals that of the n x n Gram
    matrix A A^T: the cheaper of the two is formed (n is batch + memory, r is 512).
    """
    total = features.new_zeros(())
    for f in range(features.shape[2]):
        x = features[:, :, f]
        a = weights.sqrt()[:, None] * (x - weights @ x)
        gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
        total = total + gram.square().sum() - a.square().sum(0).square().sum()
    return total


class SampleReweighter:
    """Learns one loss weight per sample from its features; keeps the global memory between steps."""

    def __init__(self, config: ReweightConfig, feature_dim: int, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        self.config = config
        self.device = torch.device(device)
        self.memory_features = torch.zeros(config.memory, feature_dim, device=self.device)
        self.memory_logits = torch.ones(config.memory, device=self.device)
        self.filled = torch.zeros(config.memory, dtype=torch.bool, device=self.device)
        self.cursor = 0
        # Own generator: the draws do not depend on (or disturb) the global RNG; saved for exact resumes.
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, rows: int, dims: int) -> tuple[Tensor, Tensor]:
        steps, count = self.config.inner_steps, self.config.fourier_features
        w = torch.randn(steps, count, generator=self.generator)
        b = 2 * math.pi * torch.rand(steps, rows, dims, count, generator=self.generator)
        return w.to(self.device), b.to(self.device)

    def learn_logits(self, z: Tensor) -> tuple[Tensor, list[float]]:
        """Optimised batch logits and the decorrelation objective at each inner step."""
        cfg = self.config
        z = z.detach().float()
        features = torch.cat([z, self.memory_features[self.filled]])
        memory_logits = self.memory_logits[self.filled]
        w, b = self._draw(features.shape[0], features.shape[1])
        logits = torch.ones(z.shape[0], device=self.device, requires_grad=True)
        optimizer = torch.optim.SGD([logits], lr=cfg.inner_lr, momentum=cfg.momentum)
        history = []
        with torch.enable_grad():
            for step in range(cfg.inner_steps):
                optimizer.param_groups[0]["lr"] = cfg.inner_lr * (0.1 if step >= cfg.inner_steps / 2 else 1.0)
                weights = torch.softmax(torch.cat([logits, memory_logits]), 0)
                decorrelation = decorrelation_objective(fourier_features(features, w[step], b[step]), weights)
                spread = torch.softmax(logits, 0).pow(cfg.weight_power).sum()
                optimizer.zero_grad()
                (decorrelation / cfg.decorrelation_lambda + spread).backward()
                optimizer.step()
                history.append(float(decorrelation.detach()))
        return logits.detach(), history

    def _remember(self, z: Tensor, logits: Tensor) -> None:
        slots = (self.cursor + torch.arange(z.shape[0], device=self.device)) % self.config.memory
        keep = torch.where(self.filled[slots], self.config.memory_decay, 0.0)[:, None]
        self.memory_features[slots] = keep * self.memory_features[slots] + (1 - keep) * z
        self.memory_logits[slots] = keep[:, 0] * self.memory_logits[slots] + (1 - keep[:, 0]) * logits
        self.filled[slots] = True
        self.cursor = (self.cursor + z.shape[0]) % self.config.memory

    def __call__(self, z: Tensor) -> Tensor:
        """Weights (batch,) for the samples whose bottleneck features are z (batch, dim); they sum to batch."""
        if z.shape[0] > self.config.memory:
            raise ValueError(f"batch {z.shape[0]} is larger than the reweighting memory ({self.config.memory})")
        logits, _ = self.learn_logits(z)
        self._remember(z.detach().float(), logits)
        return z.shape[0] * torch.softmax(logits, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"features": self.memory_features.cpu(), "logits": self.memory_logits.cpu(), "filled": self.filled.cpu(),
                "cursor": self.cursor, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory_features.copy_(state["features"])
        self.memory_logits.copy_(state["logits"])
        self.filled.copy_(state["filled"])
        self.cursor = int(state["cursor"])
        self.generator.set_state(state["generator"])
