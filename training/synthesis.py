"""Multi-degradation haze synthesis: scattering model plus camera degradations.

KA-Net's paper only says its imaging model "encapsulates multiple degraded
factors" found in real hazy photographs; the factor set and every range here
are ours (see README, "Training"). A clear image J (H x W x 3 float RGB in
[0, 1]) becomes

    I = J * t + A * (1 - t),  t = exp(-beta * d)

with d a depth map (given, or guessed from the scene layout: far at the top and in the sky, a smooth
random field, aligned to the image's edges; no depth model)
and A a coloured, spatially varying airlight; then camera degradations are
applied, each with its own probability, in random order (JPEG always last:
compression is the camera's final step).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import cv2
import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True)
class HazeConfig:
    """Every parameter range of the haze model; values are drawn uniformly from each range."""

    # Scattering. Depth is normalised to [near, 1]; beta is the extinction coefficient at that scale.
    beta: Range = (0.3, 1.4)
    haze_free_prob: float = 0.0  # share of samples left clear (camera degradations still apply): clear content stays as is
    depth_near: Range = (0.0, 0.3)  # normalised depth of the nearest pixel
    depth_grid: tuple[int, int] = (2, 6)  # control points per side of the random depth field (fewer: smoother)
    depth_vertical: Range = (0.4, 1.0)  # blend weight of a top-is-far ramp in the random field (sky, horizon)
    depth_edge_radius: float = 0.08  # guided-filter radius aligning depth to image edges (share of the short side; 0: off)
    transmission_min: float = 0.05  # floor on t so no pixel loses the scene entirely
    airlight: Range = (0.7, 1.0)  # grey level of the airlight A
    airlight_tint: float = 0.08  # each channel of A offset by U(-tint, tint): yellowish, bluish haze
    airlight_blue: Range = (0.0, 0.12)  # then blue raised and red lowered by half of this each: real haze leans blue
    airlight_variation: Range = (0.0, 0.15)  # amplitude of a smooth spatial field on A (non-uniform haze)
    # Camera degradations: probability of each, and its range.
    noise_prob: float = 0.5
    noise_sigma: Range = (0.003, 0.03)  # additive Gaussian noise, std on [0, 1]
    poisson_prob: float = 0.3
    poisson_peak: Range = (60.0, 1000.0)  # photons at white: shot noise, stronger in the dark
    defocus_prob: float = 0.25
    defocus_radius: Range = (0.6, 2.5)  # disk kernel radius, pixels
    motion_prob: float = 0.15
    motion_length: Range = (3.0, 9.0)  # line kernel length, pixels (random angle)
    low_light_prob: float = 0.05
    low_light_gain: Range = (0.35, 0.85)  # exposure gain
    gamma_prob: float = 0.1
    gamma: Range = (0.7, 1.5)  # I ** gamma
    contrast_prob: float = 0.1
    contrast: Range = (0.6, 0.95)  # scale of deviations from the image mean
    color_cast_prob: float = 0.1
    color_cast: Range = (0.85, 1.15)  # per-channel gain (white balance error)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"haze.{field.name} must be a [low, high] range with low <= high, got {list(value)}")
            elif field.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"haze.{field.name} must be a probability in [0, 1], got {value}")
        if self.depth_grid[0] < 2:
            raise ValueError("haze.depth_grid must start at 2 or more control points")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "HazeConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown haze option(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def smooth_field(rng: np.random.Generator, height: int, width: int, grid: int) -> np.ndarray:
    """A smooth random field in [0, 1]: a grid x grid uniform lattice, bicubic-upsampled."""
    coarse = rng.random((grid, grid)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)


def _normalise(depth: np.ndarray) -> np.ndarray:
    low, high = np.percentile(depth, (1, 99))
    return np.clip((depth - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


def sky_mask(clear: np.ndarray) -> np.ndarray:
    """Bright, smooth regions connected to the top row: sky, or fog already hiding the horizon."""
    grey = cv2.cvtColor(clear, cv2.COLOR_RGB2GRAY)
    mean = cv2.blur(grey, (7, 7))
    deviation = np.sqrt(np.maximum(cv2.blur(grey * grey, (7, 7)) - mean * mean, 0.0))
    candidate = ((grey > max(0.5, float(np.percentile(grey, 60)))) & (deviation < 0.04)).astype(np.uint8)
    _, labels = cv2.connectedComponents(candidate, connectivity=4)
    touching = np.unique(labels[0][candidate[0] > 0])
    return np.isin(labels, touching[touching > 0])


def _guided(guide: np.ndarray, src: np.ndarray, radius: int, eps: float = 1e-2) -> np.ndarray:
    """Edge-aware smoothing of src along guide's edges (He et al.'s guided filter)."""
    size = (2 * radius + 1, 2 * radius + 1)
    mean = lambda x: cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mean_i, mean_p = mean(guide), mean(src)
    a = (mean(guide * src) - mean_i * mean_p) / (mean(guide * guide) - mean_i * mean_i + eps)
    return mean(a) * guide + mean(mean_p - a * mean_i)


def _depth(rng: np.random.Generator, clear: np.ndarray, config: HazeConfig,
           depth: np.ndarray | None, params: dict) -> np.ndarray:
    height, width = clear.shape[:2]
    if depth is not None:
        if depth.shape[:2] != (height, width):
            raise ValueError(f"depth map is {depth.shape[:2]}, image is {(height, width)}")
        unit = _normalise(depth.astype(np.float32))
        params["depth"] = "map"
    else:
        # A depth guess from the scene layout: far at the top (horizon), sky farthest, a smooth random
        # field for everything a ramp cannot know, then aligned to the image's edges so objects keep one depth.
        grid = int(rng.integers(config.depth_grid[0], config.depth_grid[1] + 1))
        vertical = _uniform(rng, config.depth_vertical)
        ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
        unit = _normalise((1 - vertical) * smooth_field(rng, height, width, grid) + vertical * ramp)
        sky = sky_mask(clear)
        unit[sky] = 1.0
        radius = round(config.depth_edge_radius * min(height, width))
        if radius >= 1:
            grey = cv2.cvtColor(clear, cv2.COLOR_RGB2GRAY)
            unit = np.where(sky, 1.0, np.clip(_guided(grey, unit, radius), 0.0, 1.0)).astype(np.float32)
        params.update(depth="scene", depth_grid=grid, depth_vertical=vertical, sky_fraction=float(sky.mean()))
    near = _uniform(rng, config.depth_near)
    params["depth_near"] = near
    return near + (1.0 - near) * unit


def _airlight(rng: np.random.Generator, shape: tuple[int, int], config: HazeConfig, params: dict) -> np.ndarray:
    grey = _uniform(rng, config.airlight)
    blue = _uniform(rng, config.airlight_blue) / 2
    colour = grey + rng.uniform(-config.airlight_tint, config.airlight_tint, 3) + np.array([-blue, 0.0, blue])
    colour = np.clip(colour, 0.0, 1.0).astype(np.float32)
    amplitude = _uniform(rng, config.airlight_variation)
    field = smooth_field(rng, *shape, grid=3)
    params.update(airlight=[round(float(c), 4) for c in colour], airlight_variation=amplitude)
    return np.clip(colour * (1.0 + amplitude * (2.0 * field[..., None] - 1.0)), 0.0, 1.0)


# Camera degradations: each takes (image, rng, config) and returns (image, its parameters).
Degradation = Callable[[np.ndarray, np.random.Generator, HazeConfig], tuple[np.ndarray, dict]]


def _gaussian_noise(img, rng, cfg):
    sigma = _uniform(rng, cfg.noise_sigma)
    return img + rng.normal(0.0, sigma, img.shape).astype(np.float32), {"sigma": sigma}


def _poisson_noise(img, rng, cfg):
    peak = _uniform(rng, cfg.poisson_peak)
    return (rng.poisson(np.clip(img, 0, 1) * peak) / peak).astype(np.float32), {"peak": peak}


def _defocus_blur(img, rng, cfg):
    radius = _uniform(rng, cfg.defocus_radius)
    size = 2 * math.ceil(radius) + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0).astype(np.float32)  # anti-aliased disk
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT), {"radius": radius}


def _motion_blur(img, rng, cfg):
    length = _uniform(rng, cfg.motion_length)
    angle = _uniform(rng, (0.0, 180.0))
    size = 2 * math.ceil(length / 2) + 1
    kernel = np.zeros((size, size), np.float32)
    dx, dy = 0.5 * length * math.cos(math.radians(angle)), 0.5 * length * math.sin(math.radians(angle))
    centre = size // 2
    cv2.line(kernel, (round(centre - dx), round(centre - dy)), (round(centre + dx), round(centre + dy)), 1.0, 1, cv2.LINE_AA)
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT), {"length": length, "angle": angle}


def _low_light(img, rng, cfg):
    gain = _uniform(rng, cfg.low_light_gain)
    return img * gain, {"gain": gain}


def _gamma(img, rng, cfg):
    gamma = _uniform(rng, cfg.gamma)
    return np.power(np.clip(img, 0, 1), gamma), {"gamma": gamma}


def _contrast(img, rng, cfg):
    factor = _uniform(rng, cfg.contrast)
    mean = img.mean()
    return mean + (img - mean) * factor, {"factor": factor}


def _color_cast(img, rng, cfg):
    gains = rng.uniform(cfg.color_cast[0], cfg.color_cast[1], 3).astype(np.float32)
    return img * gains, {"gains": [round(float(g), 4) for g in gains]}


def _jpeg(img, rng, cfg):
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    bgr = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return decoded.astype(np.float32) / 255.0, {"quality": quality}


# name -> (probability field, function); the order here is irrelevant (shuffled), JPEG stays last.
DEGRADATIONS: dict[str, tuple[str, Degradation]] = {
    "gaussian_noise": ("noise_prob", _gaussian_noise),
    "poisson_noise": ("poisson_prob", _poisson_noise),
    "defocus_blur": ("defocus_prob", _defocus_blur),
    "motion_blur": ("motion_prob", _motion_blur),
    "low_light": ("low_light_prob", _low_light),
    "gamma": ("gamma_prob", _gamma),
    "contrast": ("contrast_prob", _contrast),
    "color_cast": ("color_cast_prob", _color_cast),
}
LAST = ("jpeg", ("jpeg_prob", _jpeg))


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def synthesize(clear: np.ndarray, rng: np.random.Generator, config: HazeConfig = HazeConfig(),
               depth: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """A hazy version of `clear` (H x W x 3 float32 RGB in [0, 1]) and the parameters drawn.

    `depth` (H x W, larger is farther, any scale) replaces the random depth field.
    Same `rng` state, same config: same output, bit for bit.
    """
    if clear.ndim != 3 or clear.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {clear.shape}")
    clear = clear.astype(np.float32, copy=False)
    params: dict[str, Any] = {}
    # Drawn only when enabled, so configurations without haze-free samples keep their random streams.
    haze_free = config.haze_free_prob > 0 and rng.random() < config.haze_free_prob
    beta = 0.0 if haze_free else _uniform(rng, config.beta)
    d = _depth(rng, clear, config, depth, params)
    t = np.maximum(np.exp(-beta * d), config.transmission_min)[..., None].astype(np.float32)
    airlight = _airlight(rng, clear.shape[:2], config, params)
    hazy = clear * t + airlight * (1.0 - t)
    params.update(beta=beta, transmission_mean=float(t.mean()))

    chosen = [(name, fn) for name, (prob, fn) in DEGRADATIONS.items() if rng.random() < getattr(config, prob)]
    order = [chosen[i] for i in rng.permutation(len(chosen))]
    if rng.random() < getattr(config, LAST[1][0]):
        order.append((LAST[0], LAST[1][1]))
    applied = []
    for name, fn in order:
        hazy, values = fn(hazy, rng, config)
        hazy = np.clip(hazy, 0.0, 1.0).astype(np.float32)
        applied.append({"name": name, **values})
    params["degradations"] = applied
    return hazy, params
