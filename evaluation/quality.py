"""Image-quality scores for dehazing outputs: full-reference and no-reference, on uint8 BGR frames.

Full reference: PSNR and SSIM (scikit-image). No reference, for real hazy photographs that
have no clear counterpart:
- haze density: mean dark channel (He et al.: in haze-free outdoor images most 15 x 15 patches
  hold a pixel near 0 in some channel, so a bright dark channel means haze); lower is clearer.
- local contrast: mean standard deviation of luminance in 7 x 7 windows; haze flattens it.
- colourfulness: Hasler and Süsstrunk (2003), M = sigma_rgyb + 0.3 mu_rgyb; haze washes it out.
These three reward over-processing (a colour cast or crushed shadows scores "clearer"), so they are
read beside two colour-fidelity scores, never as a ranking on their own:
- CIEDE2000 (full reference): mean colour difference to the clear image in CIELAB.
- colour shift (against the input): mean change of a*, b* (hue and chroma, not lightness) where
  the dark channel prior's transmission of the input is highest (its nearest, least hazy quarter).
  Dehazing should darken and saturate far regions but barely recolour near ones; 0 for the input.
NIQE is not reported: the maintained packages that compute it (pyiqa, piq) download its model
parameters at run time, which this project cannot do.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation.dcp import dark_channel, estimate_transmission

NO_REFERENCE = ("haze_density", "local_contrast", "colourfulness", "colour_shift")
FULL_REFERENCE = ("psnr_db", "ssim", "ciede2000")
NEAR_QUANTILE = 0.75  # colour shift is measured on the input's highest-transmission quarter


def _lab(frame: np.ndarray) -> np.ndarray:
    return rgb2lab(frame[..., ::-1].astype(np.float64) / 255.0)


class NearRegion:
    """The hazy input's a*, b* where its DCP transmission is highest: computed once per image,
    shared by every method scored on it."""

    def __init__(self, hazy: np.ndarray) -> None:
        transmission, _ = estimate_transmission(hazy)
        self.mask = transmission >= np.quantile(transmission, NEAR_QUANTILE)
        self.chroma = _lab(hazy)[self.mask][:, 1:]


def colour_shift(frame: np.ndarray, near: NearRegion) -> float:
    if frame.shape[:2] != near.mask.shape:
        raise ValueError(f"output {frame.shape[:2]} and input {near.mask.shape} differ in size")
    delta = _lab(frame)[near.mask][:, 1:] - near.chroma
    return float(np.hypot(delta[:, 0], delta[:, 1]).mean())


def ciede2000(frame: np.ndarray, reference: np.ndarray) -> float:
    return float(deltaE_ciede2000(_lab(reference), _lab(frame)).mean())


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


def no_reference_scores(frame: np.ndarray, near: NearRegion) -> dict[str, float]:
    return {"haze_density": haze_density(frame), "local_contrast": local_contrast(frame),
            "colourfulness": colourfulness(frame), "colour_shift": colour_shift(frame, near)}


def full_reference_scores(frame: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    if frame.shape != reference.shape:
        raise ValueError(f"output {frame.shape} and reference {reference.shape} differ in size")
    identical = np.array_equal(frame, reference)  # PSNR is infinite; skimage would warn on 1/0
    return {"psnr_db": float("inf") if identical else float(peak_signal_noise_ratio(reference, frame, data_range=255)),
            "ssim": float(structural_similarity(reference, frame, channel_axis=2, data_range=255)),
            "ciede2000": ciede2000(frame, reference)}
