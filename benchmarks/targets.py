"""The issue's performance targets, evaluated on a results document: met, or missed by how much.

Recorded, never asserted: a missed target is a finding, and says what to profile next.
"""
from __future__ import annotations

from collections.abc import Callable

from .names import ORT, TENSORRT, TORCH_EAGER

GPU_SHAPE = (1, 1080, 1920)
CPU_SHAPES = ((1, 256, 256), (1, 720, 1280))
GPU_MEMORY_LIMIT_MIB = 3e9 / 2**20  # "under 3 GB"


def _row(results: list[dict], backend: str | Callable[[str], bool], shape: tuple[int, int, int]) -> dict | None:
    match = backend if callable(backend) else (lambda name: name == backend)
    rows = [r for r in results if match(r["backend"]) and (r["batch"], r["height"], r["width"]) == shape
            and "latency_ms" in r]
    return min(rows, key=lambda r: r["latency_ms"]["p50"]) if rows else None


def _at_least(target_id: str, description: str, value: float | None, threshold: float, unit: str,
              why_missing: str, next_step: str) -> dict:
    """A target where bigger is better (a speed-up or a throughput ratio)."""
    entry = {"id": target_id, "description": description, "threshold": threshold, "unit": unit, "value": value}
    if value is None:
        return {**entry, "met": None, "detail": f"not evaluated: {why_missing}"}
    met = value >= threshold
    detail = (f"met: {value:.2f}{unit} >= {threshold:g}{unit}" if met else
              f"missed by {(1 - value / threshold):.0%}: {value:.2f}{unit} < {threshold:g}{unit}")
    return {**entry, "met": met, "detail": detail, **({} if met else {"next_step": next_step})}


def evaluate(doc: dict) -> list[dict]:
    results, on_gpu = doc["results"], doc["system"]["gpu"] is not None
    device = doc["system"]["device"]
    targets = []

    engine = _row(results, TENSORRT, GPU_SHAPE) if on_gpu else None
    eager = _row(results, TORCH_EAGER, GPU_SHAPE) if on_gpu else None
    best_torch = _row(results, lambda name: name.startswith("torch-"), GPU_SHAPE) if on_gpu else None
    gpu_missing = ("no GPU in this run" if not on_gpu else
                   "needs tensorrt and PyTorch results at 1x1080x1920 in this run")
    h100 = "" if not on_gpu or "H100" in device else f" (target set for an H100; this run is on {device})"
    engine_profile = ("trtexec --loadEngine=... --dumpProfile --separateProfileRun for per-layer times; "
                      "check the attention layers fused into flash kernels in the engine's layer list")

    def speedup(reference: dict | None) -> float | None:
        return reference["latency_ms"]["p50"] / engine["latency_ms"]["p50"] if engine and reference else None

    targets.append(_at_least("gpu_engine_vs_eager", "FP16 engine vs PyTorch eager FP32, 1080p batch 1, p50" + h100,
                             speedup(eager), 5.0, "x", gpu_missing, engine_profile))
    best_name = best_torch["backend"] if best_torch else "best PyTorch variant"
    targets.append(_at_least("gpu_engine_vs_best_torch", f"FP16 engine vs {best_name}, 1080p batch 1, p50" + h100,
                             speedup(best_torch), 1.5, "x", gpu_missing,
                             engine_profile + "; torch.profiler on the PyTorch variant for comparison"))

    peak = engine.get("memory", {}).get("device_peak_mib") if engine else None
    # Bigger-is-better form of "peak under the limit": headroom = limit / peak.
    targets.append(_at_least("gpu_engine_memory", f"FP16 engine peak device memory < 3 GB at 1080p batch 1{h100}"
                             + (f" (measured {peak:.0f} MiB)" if peak is not None else ""),
                             GPU_MEMORY_LIMIT_MIB / peak if peak else None, 1.0, "x headroom", gpu_missing,
                             "trtexec --dumpLayerInfo for activation sizes; lower the profile's max shape"))

    video = doc.get("video") or {}
    reference = (_row(results, video.get("reference_backend", ""), (1, video["clip"]["height"], video["clip"]["width"]))
                 if video.get("fps") else None)
    targets.append(_at_least(
        "video_vs_model_only", f"end-to-end video throughput vs {video.get('reference_backend', 'model')}-only "
        "throughput at the clip's resolution",
        video["fps"] / reference["fps"] if reference else None, 0.9, "x",
        video.get("skipped") or video.get("error") or "no model-only result at the clip's resolution",
        "profile `kanet run` stages (decode, inference, encode) for the one that stalls the pipeline"))

    for shape in CPU_SHAPES:
        ort, eager_cpu = (_row(results, ORT, shape), _row(results, TORCH_EAGER, shape)) if not on_gpu else (None, None)
        ratio = eager_cpu["latency_ms"]["p50"] / ort["latency_ms"]["p50"] if ort and eager_cpu else None
        targets.append(_at_least(
            f"cpu_ort_vs_eager_{shape[1]}x{shape[2]}", f"ONNX Runtime FP32 not slower than PyTorch eager FP32 on CPU, "
            f"{shape[1]}x{shape[2]} batch 1 (eager p50 / ORT p50)", ratio, 1.0, "x",
            "GPU run (a CPU target)" if on_gpu else f"needs onnxruntime and torch-eager results at {shape[1]}x{shape[2]}",
            "ONNX Runtime profiling (SessionOptions.enable_profiling) against torch.profiler, per op type"))
    return targets
