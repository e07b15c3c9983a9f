"""Image-quality scores for dehazing outputs: full-reference and no-reference, on uint8 BGR frames.

Full reference: PSNR and SSIM (scikit-image). No reference, for real hazy photographs that
have no clear counterpart:
- haze density: mean dark channel (He et al.: in haze-free outdoor images most 15 x 15 patches
  hold a pixel near 0 in some channel, so a bright dark channel means haze); lower is clearer.
- local contrast: mean standard deviation of luminance in 7 x 7 windows; haze flattens it.
- colourfulness: Hasler and Süsstrunk (2003), M = sigma_rgyb + 0.3 mu_rgyb; haze washes it out.
NIQE is not reported: the maintained packages that compute it (pyiqa, piq) download its model
parameters at run time, which this project cannot do.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmarks.dcp import dark_channel

NO_REFERENCE = ("haze_density", "local_contrast", "colourfulness")
FULL_REFERENCE = ("psnr_db", "ssim")


def haze_density(frame: np.ndarray, patch: int = 15) -> float:
    return float(dark_channel(frame.astype(np.float32) / 255.0, patch).mean())


def local_contrast(frame: np.ndarray, window: int = 7) -> float:
    luma = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float64) / 255.0
    mean = cv2.blur(luma, (window, window))
    var = np.maximum(cv2.blur(luma * luma, (window, window)) - mean * mean, 0.0)
    return float(np.sqrt(var).mean())


def colourfulness(frame: np.ndarray) -> float:
    b, g, r = (frame[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def no_reference_scores(frame: np.ndarray) -> dict[str, float]:
    return {"haze_density": haze_density(frame), "local_contrast": local_contrast(frame),
            "colourfulness": colourfulness(frame)}


def full_reference_scores(frame: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    if frame.shape != reference.shape:
        raise ValueError(f"output {frame.shape} and reference {reference.shape} differ in size")
    identical = np.array_equal(frame, reference)  # PSNR is infinite; skimage would warn on 1/0
    return {"psnr_db": float("inf") if identical else float(peak_signal_noise_ratio(reference, frame, data_range=255)),
            "ssim": float(structural_similarity(reference, frame, channel_axis=2, data_range=255))}
