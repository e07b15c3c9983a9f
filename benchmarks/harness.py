"""The timing loop: every backend on the same frames, interleaved so machine drift hits all alike.

Per shape: each backend's first call is timed apart (compilation, JIT kernels, allocations:
`setup_s`); its second call, already warm, measures peak memory (the probes reset counters and
release cached memory, so they stay out of the timed calls); then every backend makes `warmup`
more untimed calls, and only then the timed rounds, in which every backend runs once, the
starting backend rotating each round. A latency is host wall-clock time from uint8 frames in
to uint8 frames out (the output is on the host, so the device has finished).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from runtime.backend import Timings
from runtime.progress import progress as progress_bar

from .backends import BenchBackend


@dataclass(frozen=True)
class Shape:
    batch: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}"

    @property
    def resolution(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass(frozen=True)
class Settings:
    warmup: int = 3
    iterations: int = 30       # timed rounds at most
    min_iterations: int = 3    # timed rounds at least, whatever the budget
    budget_s: float = 60.0     # timed rounds per shape stop near this (all backends together)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def latency_stats(samples_ms: list[float]) -> dict:
    values = np.asarray(samples_ms)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _checked(backend: BenchBackend, frames: np.ndarray) -> float:
    """One call; its wall time in ms. Raises if the output is not frames of the input's shape."""
    start = time.perf_counter()
    out, _ = backend.infer_timed(frames)
    elapsed = (time.perf_counter() - start) * 1e3
    if out.shape != frames.shape or out.dtype != np.uint8:
        raise ValueError(f"returned {out.dtype} {out.shape} for uint8 {frames.shape}")
    return elapsed


def rounds_for(estimate_ms: float, settings: Settings) -> int:
    """Timed rounds: as many as fit the budget, clamped to [min_iterations, iterations]."""
    fit = math.floor(settings.budget_s * 1e3 / max(estimate_ms, 1e-3))
    return max(settings.min_iterations, min(settings.iterations, fit))


def measure_shape(backends: list[BenchBackend], shape: Shape, settings: Settings, flops_per_batch: int | None = None,
                  progress: bool | None = None) -> list[dict]:
    """One result row per backend at `shape` (an "error" row for a backend that failed). progress: as
    runtime.progress takes it (None: a bar on a terminal, lines in a log; False: none)."""
    frames = np.random.default_rng(settings.seed).integers(0, 256, (shape.batch, shape.height, shape.width, 3),
                                                           dtype=np.uint8)
    rows: dict[str, dict] = {}
    live: list[BenchBackend] = []
    last_ms: dict[str, float] = {}
    with progress_bar(len(backends), progress, f"{shape.label} setup", "backend", leave=False) as bar:
        for backend in backends:
            base = {"backend": backend.name, "precision": backend.precision, **asdict(shape)}
            try:
                start = time.perf_counter()
                _checked(backend, frames)
                setup_s = time.perf_counter() - start
                start = time.perf_counter()
                peak = backend.memory(frames)
                last_ms[backend.name] = (time.perf_counter() - start) * 1e3
            except Exception as exc:  # a backend that cannot run this shape is a result, not a crash
                rows[backend.name] = {**base, "error": _first_line(exc)}
            else:
                rows[backend.name] = {**base, "setup_s": round(setup_s, 3), "memory": peak}
                live.append(backend)
            bar.update(1)
    with progress_bar(settings.warmup, progress, f"{shape.label} warm-up", "round", leave=False) as bar:
        for _ in range(settings.warmup):
            for backend in live:
                last_ms[backend.name] = _checked(backend, frames)
            bar.update(1)
    estimate = sum(last_ms[b.name] for b in live)

    rounds = rounds_for(estimate, settings) if live else 0
    samples: dict[str, list[float]] = {b.name: [] for b in live}
    splits: dict[str, list[Timings]] = {b.name: [] for b in live}
    with progress_bar(rounds * len(live), progress, f"{shape.label} timing", "call", leave=False) as bar:
        for i in range(rounds):
            for backend in live[i % len(live):] + live[:i % len(live)]:
                start = time.perf_counter()
                _, split = backend.infer_timed(frames)
                samples[backend.name].append((time.perf_counter() - start) * 1e3)
                splits[backend.name].append(split)
                bar.update(1)

    for backend in live:
        stats = latency_stats(samples[backend.name])
        stages = [asdict(s) for s in splits[backend.name]]
        split = {key: float(np.median([s[key] for s in stages])) for key in stages[0]}
        row = rows[backend.name]
        row.update({
            "warmup": settings.warmup, "iterations": rounds,
            "latency_ms": stats,
            "fps": shape.batch * 1e3 / stats["mean"],
            "split_ms": split,
            "samples_ms": [round(s, 3) for s in samples[backend.name]],
        })
        if flops_per_batch:
            row["achieved_tflops"] = flops_per_batch / (stats["p50"] * 1e-3) / 1e12
    return [rows[b.name] for b in backends]
