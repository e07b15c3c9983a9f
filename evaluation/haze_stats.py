"""Statistics that characterise haze, to calibrate synthetic haze against real hazy photographs.

Each image is first resized so its short side is `SHORT_SIDE` (the dark channel's 15 px patch then
covers the same share of every image). Per image:
- dark channel: mean of the dark channel (He et al.); the haze density.
- airlight brightness, airlight tint: mean and blue-minus-red of the DCP airlight estimate.
- saturation: mean HSV saturation; haze washes colour out.
- contrast: mean 7 x 7 luminance standard deviation.
- contrast far/near: contrast of the top third over the bottom third; haze hides far (upper) content
  more, so real haze puts this below 1 where clear scenes sit near or above it.
A synthetic set matches real haze when every statistic's median lies within MATCH_TOLERANCE of the real
p10-p90 spread from the real median; `compare` tabulates percentiles side by side, `plot` draws histograms.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from evaluation.dcp import dark_channel, estimate_airlight
from evaluation.quality import local_contrast
from runtime.imagefile import IMAGE_SUFFIXES, read_image

SHORT_SIDE = 256
STATISTICS = ("dark_channel", "airlight_brightness", "airlight_tint", "saturation", "contrast", "contrast_far_near")
PERCENTILES = (10, 50, 90)
MATCH_TOLERANCE = 0.25  # largest median gap, as a share of the real p10-p90 spread, that counts as a match


def _resize(frame: np.ndarray) -> np.ndarray:
    scale = SHORT_SIDE / min(frame.shape[:2])
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def haze_statistics(frame: np.ndarray) -> dict[str, float]:
    """The statistics of one uint8 BGR frame."""
    frame = _resize(frame)
    image = frame.astype(np.float64) / 255.0
    dark = dark_channel(image, 15)
    airlight = estimate_airlight(image, dark, 0.001)  # BGR
    third = frame.shape[0] // 3
    near = local_contrast(frame[-third:])
    return {"dark_channel": float(dark.mean()),
            "airlight_brightness": float(airlight.mean()),
            "airlight_tint": float(airlight[0] - airlight[2]),
            "saturation": float(cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)[..., 1].mean() / 255.0),
            "contrast": local_contrast(frame),
            "contrast_far_near": float(local_contrast(frame[:third]) / max(near, 1e-6))}


@dataclass
class StatisticsSet:
    """Per-image statistics of one set of images, by statistic name."""
    label: str
    values: dict[str, np.ndarray]

    @classmethod
    def of_folders(cls, label: str, folders: list[Path]) -> "StatisticsSet":
        """Every image under the folders (recursively)."""
        paths = sorted(p for folder in folders for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return cls.of_images(label, paths)

    @classmethod
    def of_images(cls, label: str, paths: list[Path]) -> "StatisticsSet":
        rows = []
        for path in paths:
            frame = read_image(path, cv2.IMREAD_COLOR)
            if frame is not None:
                rows.append(haze_statistics(frame))
        if not rows:
            raise ValueError(f"{label}: no readable image")
        return cls(label, {k: np.array([r[k] for r in rows]) for k in STATISTICS})

    @property
    def count(self) -> int:
        return len(self.values[STATISTICS[0]])

    def percentiles(self, name: str) -> tuple[float, ...]:
        return tuple(float(v) for v in np.percentile(self.values[name], PERCENTILES))


def median_gaps(real: StatisticsSet, synthetic: StatisticsSet) -> dict[str, float]:
    """Per statistic, |synthetic median - real median| over the real p10-p90 spread: 0 is a perfect match."""
    gaps = {}
    for name in STATISTICS:
        r, s = real.percentiles(name), synthetic.percentiles(name)
        gaps[name] = abs(s[1] - r[1]) / max(r[2] - r[0], 1e-9)
    return gaps


def compare(real: StatisticsSet, synthetic: StatisticsSet) -> str:
    """A Markdown table of both sets' 10th/50th/90th percentiles and their median gap."""
    lines = [f"| statistic | {real.label} (n={real.count}) p10 / p50 / p90 | {synthetic.label} (n={synthetic.count}) "
             f"p10 / p50 / p90 | median gap / real spread (match <= {MATCH_TOLERANCE}) |", "| --- | --- | --- | ---: |"]
    for name, gap in median_gaps(real, synthetic).items():
        r, s = real.percentiles(name), synthetic.percentiles(name)
        lines.append(f"| {name} | {' / '.join(f'{v:.3f}' for v in r)} | {' / '.join(f'{v:.3f}' for v in s)} | {gap:.2f} |")
    return "\n".join(lines) + "\n"


def plot(sets: list[StatisticsSet], path: Path) -> None:
    """Histograms of every statistic, one colour per set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, name in zip(axes.ravel(), STATISTICS):
        low = min(float(s.values[name].min()) for s in sets)
        high = max(float(s.values[name].max()) for s in sets)
        bins = np.linspace(low, high + 1e-9, 21)
        for s in sets:
            ax.hist(s.values[name], bins=bins, alpha=0.5, density=True, label=f"{s.label} (n={s.count})")
        ax.set_title(name)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
