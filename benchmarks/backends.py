"""Every way of running KA-Net behind one interface: uint8 BGR frames in, uint8 BGR frames out.

All backends do the same work, the deployed frame path (colour order, scaling, padding to a
multiple of 16, network, crop, clamp, rounding): the PyTorch ones run `export.wrappers.FrameIO`,
the graph the ONNX models and engines were exported from. A timing covers host frames in to
host frames out; on a GPU the split (host-to-device, compute, device-to-host) comes from CUDA
events for PyTorch and from the runtime's `infer_timed` for ONNX Runtime and TensorRT.
"""
from __future__ import annotations

import abc
import contextlib
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from export.wrappers import FrameIO
from runtime.backend import Timings
from runtime.openvino_backend import OpenVinoOptions
from training import KANet

from . import memory
from .names import TORCH_AUTOCAST, TORCH_COMPILE


class BenchBackend(abc.ABC):
    """One contender of a side-by-side benchmark: the runtime's back-ends through `runtime.Dehazer`, and the
    PyTorch configurations they are measured against."""
    name: str
    precision: str
    includes: str  # what one timing covers, in words

    @abc.abstractmethod
    def infer_timed(self, frames: np.ndarray) -> tuple[np.ndarray, Timings]:
        """(dehazed frames, milliseconds per stage; no copy times where none happen)."""

    @abc.abstractmethod
    def memory(self, frames: np.ndarray) -> dict:
        """Peak memory of one call on `frames`."""

    def describe(self) -> dict:
        return {"precision": self.precision, "includes": self.includes}

    def close(self) -> None:
        """Release what the backend holds (sessions, engines); PyTorch modules need nothing."""


class TorchBackend(BenchBackend):
    """PyTorch on the frame wrapper: eager FP32, autocast (+ channels_last), or torch.compile of autocast.

    Autocast is FP16 on a GPU and bfloat16 on CPU (CPU autocast's reduced type; FP16 CPU
    kernels are not what a CPU user would run). torch.compile compiles the autocast,
    channels_last module: the fastest PyTorch configuration, the one an engine must beat.
    Each resolution and batch is compiled once (dynamic=False), like an engine's profile.
    """

    def __init__(self, name: str, model: KANet, device: torch.device) -> None:
        self.name, self.device = name, device
        reduced = name in (TORCH_AUTOCAST, TORCH_COMPILE)
        self.autocast_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if reduced else None
        self.precision = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.autocast_dtype]
        net = copy.deepcopy(model).to(memory_format=torch.channels_last) if reduced else model
        module = FrameIO(net).eval().to(device)
        self.weight_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        self.module: Callable = torch.compile(module, dynamic=False) if name == TORCH_COMPILE else module
        # Dynamo traces under no_grad; eager runs under inference_mode (cheaper tensors).
        self._grad_mode = torch.no_grad if name == TORCH_COMPILE else torch.inference_mode
        where = "GPU, CUDA events" if device.type == "cuda" else "CPU"
        self.includes = (f"uint8 host frames -> FrameIO ({self.precision}"
                         f"{', channels_last' if reduced else ''}) -> uint8 host frames; {where}")

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(self._grad_mode())
        if self.autocast_dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
        return stack

    def infer_timed(self, frames: np.ndarray) -> tuple[np.ndarray, Timings]:
        host = torch.from_numpy(frames)
        if self.device.type != "cuda":
            start = time.perf_counter()
            with self._context():
                out = self.module(host).numpy()
            total = (time.perf_counter() - start) * 1e3
            return out, Timings(compute_ms=total, total_ms=total)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        events[0].record()
        x = host.to(self.device)
        events[1].record()
        with self._context():
            y = self.module(x)
        events[2].record()
        out = y.cpu().numpy()
        events[3].record()
        events[3].synchronize()
        return out, Timings(h2d_ms=events[0].elapsed_time(events[1]), compute_ms=events[1].elapsed_time(events[2]),
                            d2h_ms=events[2].elapsed_time(events[3]), total_ms=events[0].elapsed_time(events[3]))

    def memory(self, frames: np.ndarray) -> dict:
        if self.device.type != "cuda":
            return memory.host_rss(lambda: self.infer_timed(frames))
        before = torch.cuda.memory_allocated(self.device)
        result = memory.torch_cuda(lambda: self.infer_timed(frames), self.device)
        # Count this backend's weights and its own peak, not the other PyTorch backends' weights.
        result["device_peak_mib"] = round(result["device_peak_mib"] - (before - self.weight_bytes) / memory.MIB, 1)
        result["device_method"] += " - other live tensors"
        return result


class RuntimeBackend(BenchBackend):
    """The project's torch-free runtime (`runtime.Dehazer`) on an ONNX model or an engine; OpenVINO always on the
    CPU (its memory is then host memory, also on a GPU machine)."""

    def __init__(self, name: str, model_path: Path, runtime_backend: str, device: torch.device,
                 openvino: OpenVinoOptions | None = None) -> None:
        from runtime import Dehazer

        device = torch.device("cpu") if runtime_backend == "openvino" else device
        self.name, self.device = name, device
        self.baseline = memory.non_torch_device_bytes(device) if device.type == "cuda" else 0
        self.dehazer = Dehazer.load(model_path, backend=runtime_backend, device=str(device), openvino=openvino)
        self.precision = str(self.dehazer.precision)
        self.model_path = model_path
        self.includes = (f"uint8 host frames -> runtime.Dehazer ({self.dehazer.backend}, {model_path.name}) "
                         "-> uint8 host frames")

    def infer_timed(self, frames: np.ndarray) -> tuple[np.ndarray, Timings]:
        return self.dehazer.infer_timed(frames)

    def memory(self, frames: np.ndarray) -> dict:
        if self.device.type != "cuda":
            return memory.host_rss(lambda: self.infer_timed(frames))
        return memory.runtime_device(lambda: self.infer_timed(frames), self.device, self.baseline)

    def close(self) -> None:
        self.dehazer.close()

    def describe(self) -> dict:
        return {**super().describe(), "runtime_backend": str(self.dehazer.backend), "model": str(self.model_path)}
