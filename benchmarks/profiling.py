"""Where the time goes, per op type: ONNX Runtime's profiler and torch.profiler on the same frames.

Run for a missed CPU target, so the results say what to work on next.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.wrappers import FrameIO
from training import KANet

TOP = 8


def _top(times_ms: dict[str, float], calls: int) -> list[dict]:
    total = sum(times_ms.values())
    ranked = sorted(times_ms.items(), key=lambda item: -item[1])[:TOP]
    return [{"op": op, "ms_per_call": round(ms / calls, 2), "share": round(ms / total, 3)} for op, ms in ranked]


def onnxruntime_ops(onnx_path: Path, frames: np.ndarray, calls: int = 2) -> list[dict]:
    """Time per ONNX op type over `calls` runs after one warm-up (CPU provider, default options)."""
    options = ort.SessionOptions()
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(calls + 1):
            session.run(None, {name: frames})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    warm_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    times: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm_end:
            times[event["args"]["op_name"]] += event["dur"] / 1e3
    return _top(times, calls)


def torch_ops(model: KANet, frames: np.ndarray, calls: int = 2) -> list[dict]:
    """Self CPU time per aten op of `calls` eager FP32 calls after one warm-up."""
    wrapper = FrameIO(model).eval()
    x = torch.from_numpy(frames)
    with torch.inference_mode():
        wrapper(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                wrapper(x)
    times = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    return _top(times, calls)
