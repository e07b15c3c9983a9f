"""What a frame size costs on a back-end, for the one warning about frames beyond its comfortable size.

Expected time and memory come from `kanet bench` results of the same kind of back-end, extrapolated from the
largest size measured: time with the growth between the two largest sizes (KA-Net's attention grows faster
than the pixel count), memory in proportion to the pixels (the bench process's peak holds every back-end it
timed, so its growth would overstate). The points are read from frame_cost.json beside this module: package
data, so an installed package without the repository's benchmarks/results has them too. `python -m
benchmarks.cost_table` makes it from those results (tests/test_frame_cost.py checks that they agree). A kind of
back-end without results gets the advice only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("frame_cost.json")
# Up to 1088 x 1920 on a CPU (the default engine profile: the size the project is built for), 4K on a GPU.
COMFORTABLE_MPIX = {"cpu": 2.1, "gpu": 8.3}


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
    """('onnxruntime', 'openvino' or 'tensorrt', 'cpu' or 'gpu') of a Dehazer's backend name."""
    if backend.startswith("onnxruntime"):
        return "onnxruntime", "cpu" if backend.endswith("CPUExecutionProvider") else "gpu"
    if backend.startswith("openvino"):  # "openvino 2026.4.1:CPU": the runtime compiles for the CPU only
        return "openvino", "cpu"
    return "tensorrt", "gpu"


def _seconds(big: Point, small: Point, mpix: float) -> float:
    """big's time scaled to mpix with the power law through both points, its exponent kept in [1, 2]."""
    exponent = 1.0
    if small.mpix < big.mpix and small.seconds > 0 and big.seconds > 0:
        exponent = min(2.0, max(1.0, math.log(big.seconds / small.seconds) / math.log(big.mpix / small.mpix)))
    return big.seconds * (mpix / big.mpix) ** exponent


def shipped() -> dict:
    """frame_cost.json: per kind of back-end ('onnxruntime/cpu', ...), where it was measured and its two largest
    batch-1 points, [height, width, seconds, MiB], largest first."""
    return json.loads(TABLE.read_text())


def estimate(height: int, width: int, backend: str, table: dict | None = None) -> Cost | None:
    """The cost of one frame from `table` (a table like the shipped one; default: the shipped one)."""
    family, device = backend_kind(backend)
    entry = (shipped() if table is None else table).get(f"{family}/{device}")
    if not entry:
        return None
    big, small = (Point(*p) for p in (entry["points"][0], entry["points"][-1]))
    mpix = height * width / 1e6
    return Cost(_seconds(big, small, mpix), big.mib * mpix / big.mpix / 1024,
                f"extrapolated from kanet bench at {big.height}x{big.width} {entry['where']}")


def oversize_warning(height: int, width: int, backend: str, table: dict | None = None) -> str | None:
    """The warning for a frame above the back-end's comfortable size, with a --max-side that fits; else None."""
    _, device = backend_kind(backend)
    mpix, limit = height * width / 1e6, COMFORTABLE_MPIX[device]
    if mpix <= limit:
        return None
    side = max(64, int(max(height, width) * math.sqrt(limit / mpix)) // 64 * 64)
    cost = estimate(height, width, backend, table)
    expect = (f"expect about {cost.seconds:.0f} s and {cost.gib:.1f} GiB per frame ({cost.basis})" if cost
              else "no kanet bench results for this back-end to say how long and how much memory it takes")
    return (f"frames of {height}x{width} ({mpix:.1f} MPix) are larger than the {limit:g} MPix {backend} handles "
            f"comfortably: {expect}; --max-side {side} dehazes them at {side} px on the long side, much faster")
