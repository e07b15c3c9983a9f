"""Dark channel prior dehazing (He, Sun and Tang, CVPR 2009 / TPAMI 2011): the classic baseline.

Transmission refined with the guided filter (He et al., ECCV 2010), as in the TPAMI version's
fast variant. Works on uint8 BGR frames, like the runtime; no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DCPConfig:
    patch: int = 15            # min-filter size of the dark channel (the paper's 15 x 15)
    omega: float = 0.95        # keeps a little haze for depth perception (paper: 0.95)
    top_fraction: float = 0.001  # brightest 0.1% of the dark channel pick the airlight
    t_min: float = 0.1         # lower bound on transmission (paper: t0 = 0.1)
    guide_radius: int = 60     # guided-filter radius for the paper's 600 x 400 images
    guide_eps: float = 1e-3


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """Per-pixel minimum over colour channels, then over a patch x patch window."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(image.min(axis=2), kernel)


def estimate_airlight(image: np.ndarray, dark: np.ndarray, top_fraction: float) -> np.ndarray:
    """Among the brightest dark-channel pixels, the one with the highest intensity (per channel).
    Every pixel tied with the cut is a candidate: a dark channel of 8-bit frames has hundreds of ties there, and
    which of them a partial sort keeps differs between NumPy's CPU-specific kernels, so the airlight would too."""
    count = max(1, int(dark.size * top_fraction))
    cut = np.partition(dark.ravel(), -count)[-count]
    candidates = image.reshape(-1, 3)[dark.ravel() >= cut]
    return candidates[candidates.sum(axis=1).argmax()]


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter; box means with OpenCV (O(1) per pixel in the radius)."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_64F, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(guide), mean(src)
    cov_ip = mean(guide * src) - mean_i * mean_p
    var_i = mean(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a) * guide + mean(b)


def estimate_transmission(frame: np.ndarray, config: DCPConfig = DCPConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Refined transmission (H x W, 1 = haze-free) and airlight (3,) of one uint8 frame."""
    image = frame.astype(np.float64) / 255.0
    airlight = np.maximum(estimate_airlight(image, dark_channel(image, config.patch), config.top_fraction), 1e-3)
    transmission = 1.0 - config.omega * dark_channel(image / airlight, config.patch)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float64) / 255.0
    radius = max(1, min(config.guide_radius, min(frame.shape[:2]) // 4))
    return guided_filter(grey, transmission, radius, config.guide_eps), airlight


def dehaze_dcp(frame: np.ndarray, config: DCPConfig = DCPConfig()) -> np.ndarray:
    """Dehaze one uint8 H x W x 3 frame (any channel order: the prior is channel-symmetric)."""
    transmission, airlight = estimate_transmission(frame, config)
    transmission = np.maximum(transmission, config.t_min)[..., None]
    clean = (frame.astype(np.float64) / 255.0 - airlight) / transmission + airlight
    return np.clip(clean * 255.0 + 0.5, 0, 255).astype(np.uint8)
