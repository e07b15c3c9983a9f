"""The one contract every inference back-end of the runtime keeps, after Polygraphy's `BaseRunner`.

A back-end takes uint8 N x H x W x 3 BGR batches within its shape limits and returns the
dehazed batch with the time each stage took. `Dehazer` does everything else (tiles, padding,
batch splitting, resizing), so a new back-end is one class.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from .artifacts import MIN_FRAME_SIZE
from .errors import DehazeError


@dataclass(frozen=True)
class Timings:
    """Milliseconds one call spent copying frames to the device, computing and copying them back."""
    h2d_ms: float = 0.0
    compute_ms: float = 0.0
    d2h_ms: float = 0.0
    total_ms: float = 0.0

    def __add__(self, other: Timings) -> Timings:
        return Timings(self.h2d_ms + other.h2d_ms, self.compute_ms + other.compute_ms,
                       self.d2h_ms + other.d2h_ms, self.total_ms + other.total_ms)

    def per(self, count: int) -> Timings:
        """The mean over `count` frames (zeros for none)."""
        scale = 1.0 / max(count, 1)
        return Timings(self.h2d_ms * scale, self.compute_ms * scale, self.d2h_ms * scale, self.total_ms * scale)

    def to_json(self, digits: int = 3) -> dict[str, float]:
        return {key: round(value, digits) for key, value in asdict(self).items()}


class Backend(Protocol):
    name: str                              # what runs the model, e.g. "onnxruntime:CPUExecutionProvider"
    precision: str                         # "fp32", "fp16" or "bf16": what the model computes in
    min_shape: tuple[int, int, int]        # the smallest (N, H, W) one call takes
    max_shape: tuple[int | None, int | None, int | None] | None  # the largest; None (or a None in it): unbounded

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, Timings]:
        """A contiguous uint8 N x H x W x 3 batch within the shape limits -> the dehazed batch."""

    def run_device(self, frames):
        """Frames in GPU memory (__cuda_array_interface__) -> a DeviceArray; DehazeError where unsupported."""

    def close(self) -> None:
        """Release sessions, engines and memory; idempotent."""


class HostBackend:
    """A back-end that computes on host arrays (ONNX Runtime, OpenVINO, a server): no copies to time, any
    frame of at least 33 x 33 (the graph pads to a multiple of 16), any batch. Subclasses set `name` and
    `precision` and implement `_infer`."""
    name: str
    precision: str
    min_shape: tuple[int, int, int] = (1, MIN_FRAME_SIZE, MIN_FRAME_SIZE)
    max_shape: tuple[int, int, int] | None = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, Timings]:
        started = time.perf_counter()
        out = self._infer(batch)
        compute = (time.perf_counter() - started) * 1e3
        return out, Timings(compute_ms=compute, total_ms=compute)

    def run_device(self, frames):
        raise DehazeError(f"frames in GPU memory need an engine (.plan) backend; {self.name} takes numpy frames")

    def close(self) -> None:
        pass
