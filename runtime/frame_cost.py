"""What a frame size costs on a back-end, for the one warning about frames beyond its comfortable size.

Expected time and memory come from `kanet bench` results of the same kind of back-end (benchmarks/results
in a checkout), extrapolated from the largest size measured: time with the growth between the two largest
sizes (KA-Net's attention grows faster than the pixel count), memory in proportion to the pixels (the
bench process's peak holds every back-end it timed, so its growth would overstate). Without such results a
CPU gets a rough estimate from the project's own 2-core run, said to be one; a GPU gets the advice only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# Up to 1088 x 1920 on a CPU (the default engine profile: the size the project is built for), 4K on a GPU.
COMFORTABLE_MPIX = {"cpu": 2.1, "gpu": 8.3}
# onnxruntime, batch 1, 1080 x 1920 and 720 x 1280 on a 2-core AMD EPYC (benchmarks/results/cpu-amd-epyc-20261125-1551)
CPU_FALLBACK = ((1080, 1920, 8.58, 11493.0), (720, 1280, 2.20, 2748.0))


@dataclass
class Point:
    height: int
    width: int
    seconds: float
    mib: float

    @property
    def mpix(self) -> float:
        return self.height * self.width / 1e6


@dataclass
class Cost:
    seconds: float
    gib: float
    basis: str  # where the figures come from, for the message


def backend_kind(backend: str) -> tuple[str, str]:
    """('onnxruntime' or 'tensorrt', 'cpu' or 'gpu') of a Dehazer's backend name."""
    if backend.startswith("onnxruntime"):
        return "onnxruntime", "cpu" if backend.endswith("CPUExecutionProvider") else "gpu"
    return "tensorrt", "gpu"


def measured(family: str, device: str, results: Path = RESULTS) -> tuple[list[Point], str] | None:
    """The batch-1 points of the `kanet bench` run of this back-end kind under results that measured the largest
    frames (the latest of those), largest first, and where it ran."""
    runs = []
    for path in sorted(results.glob("*/results.json")):
        try:
            doc = json.loads(path.read_text())
            on_gpu = bool(doc["system"].get("gpu"))
            rows = [r for r in doc["results"] if r["backend"] == family and r["batch"] == 1 and "latency_ms" in r]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a results file of this format: not evidence
        memory = "device_peak_mib" if device == "gpu" else "host_rss_mib"
        points = [Point(r["height"], r["width"], r["latency_ms"]["p50"] / 1e3, r["memory"].get(memory, 0.0))
                  for r in rows if r.get("memory")]
        if points and on_gpu == (device == "gpu"):
            where = doc["system"]["gpu"]["name"] if on_gpu else doc["system"]["cpu"]["model"]
            runs.append((doc["system"].get("started_at", ""), sorted(points, key=lambda p: -p.mpix),
                         f"on {where}: {path.parent.name}"))
    if not runs:
        return None
    _, points, where = max(runs, key=lambda run: (run[1][0].mpix, run[0]))  # the largest size, then the latest
    return points, where


def _seconds(big: Point, small: Point, mpix: float) -> float:
    """big's time scaled to mpix with the power law through both points, its exponent kept in [1, 2]."""
    exponent = 1.0
    if small.mpix < big.mpix and small.seconds > 0 and big.seconds > 0:
        exponent = min(2.0, max(1.0, math.log(big.seconds / small.seconds) / math.log(big.mpix / small.mpix)))
    return big.seconds * (mpix / big.mpix) ** exponent


def estimate(height: int, width: int, backend: str, results: Path = RESULTS) -> Cost | None:
    family, device = backend_kind(backend)
    found = measured(family, device, results)
    if found:
        points, where = found
        basis = f"extrapolated from kanet bench at {points[0].height}x{points[0].width} {where}"
    elif device == "cpu":
        points, basis = [Point(*p) for p in CPU_FALLBACK], "a rough estimate from a 2-core CPU; run kanet bench for figures of this one"
    else:
        return None
    mpix = height * width / 1e6
    big, small = points[0], points[min(1, len(points) - 1)]
    return Cost(_seconds(big, small, mpix), big.mib * mpix / big.mpix / 1024, basis)


def oversize_warning(height: int, width: int, backend: str, results: Path = RESULTS) -> str | None:
    """The warning for a frame above the back-end's comfortable size, with a --max-side that fits; else None."""
    _, device = backend_kind(backend)
    mpix, limit = height * width / 1e6, COMFORTABLE_MPIX[device]
    if mpix <= limit:
        return None
    side = max(64, int(max(height, width) * math.sqrt(limit / mpix)) // 64 * 64)
    cost = estimate(height, width, backend, results)
    expect = (f"expect about {cost.seconds:.0f} s and {cost.gib:.1f} GiB per frame ({cost.basis})" if cost
              else "no kanet bench results for this back-end to say how long and how much memory it takes")
    return (f"frames of {height}x{width} ({mpix:.1f} MPix) are larger than the {limit:g} MPix {backend} handles "
            f"comfortably: {expect}; --max-side {side} dehazes them at {side} px on the long side, much faster")
