"""A frame-I/O ONNX model on OpenVINO's CPU plugin, in FP32 or BF16 (where the CPU has AVX-512 BF16).

OpenVINO reads the export's kanet_fp32.onnx as it is, com.microsoft.MultiHeadAttention nodes included, so
ONNX Runtime and OpenVINO run the same file.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from .backend import HostBackend
from .errors import DehazeError

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's INFERENCE_PRECISION_HINT
# latency: one request uses every core (a single stream); throughput: OpenVINO splits the cores into streams
# and a batch's frames run as parallel requests, one per frame
MODES = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
RUNS_AS = {"f32": "fp32", "bf16": "bf16"}
# OpenVINO 2026.4's AMX kernels compute this network wrongly in BF16 for some frame sizes (on a Xeon with AMX, 130 x 66
# and 144 x 80 frames: 19 dB against PyTorch, while AVX-512 BF16 gives 58 dB), so its oneDNN is capped below AMX. It
# reads the cap once, at first use; a value the user set wins.
ONEDNN_ISA_CAP = ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")


class OpenVinoMissing(DehazeError, ImportError):
    """The openvino package cannot be imported."""


def import_openvino() -> ModuleType:
    os.environ.setdefault(*ONEDNN_ISA_CAP)
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise OpenVinoMissing("the openvino backend needs OpenVINO, which is not installed: pip install openvino") \
            from None


@dataclass(frozen=True)
class OpenVinoOptions:
    precision: str = "fp32"             # fp32 | bf16 (a CPU without BF16 runs FP32; .precision says which ran)
    threads: int | None = None          # None: OpenVINO's default (every core)
    cache_dir: Path | None = None       # OpenVINO's compiled-model cache; None: compile on every load
    mode: str = "latency"               # latency | throughput (see MODES)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise DehazeError(f"OpenVINO precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.mode not in MODES:
            raise DehazeError(f"OpenVINO mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.threads is not None and self.threads < 1:
            raise DehazeError(f"OpenVINO threads {self.threads}: must be at least 1")


@functools.cache
def shared_core():
    """The process's one OpenVINO Core. Each Core's CPU plugin installs an alternate signal stack of its own on
    the thread that made it, and puts back the one it found when it goes: two Cores dropped in the order they
    were made leave the first one's freed stack installed, and the next Python signal handler on that thread
    (Ctrl-C, a child process's exit) kills the process with SIGSEGV (seen in the test suite, OpenVINO 2026.4)."""
    return import_openvino().Core()


def compile_cpu(path: Path, options: OpenVinoOptions):
    """(openvino module, the model compiled for OpenVINO's CPU plugin as `options` say)."""
    ov, core = import_openvino(), shared_core()
    # only ONNX, checked first: on any other file OpenVINO would also try its TensorFlow reader, which logs to stderr
    if not ov.frontend.FrontEndManager().load_by_framework("onnx").supported(str(path)):
        raise DehazeError(f"{path}: OpenVINO cannot load the model (not an ONNX model)")
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[options.precision], "PERFORMANCE_HINT": MODES[options.mode]}
    if options.threads is not None:
        config["INFERENCE_NUM_THREADS"] = options.threads
    if options.cache_dir is not None:  # per model, not on the shared Core
        Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(options.cache_dir)
    try:  # from the path, so a cached compile skips reading the ONNX file too
        return ov, core.compile_model(str(path), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own for unreadable models
        # its message is a chain of "Exception from src/...cpp:N:" and "Check ... failed" lines; the last says why
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise DehazeError(f"{path}: OpenVINO cannot load the model ({lines[-1] if lines else type(exc).__name__})") \
            from None


def runs_as(compiled) -> str:
    """The precision a compiled model computes in: 'bf16' only where the CPU has BF16, else 'fp32'."""
    name = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return RUNS_AS.get(name, name)


def backend_name(ov: ModuleType) -> str:
    return f"openvino {ov.__version__.split('-')[0]}:CPU"


class OpenVinoBackend(HostBackend):
    def __init__(self, path: Path, options: OpenVinoOptions = OpenVinoOptions()) -> None:
        ov, self._compiled = compile_cpu(path, options)
        inp = self._compiled.input(0)
        shape = inp.get_partial_shape()
        if inp.get_element_type() != ov.Type.u8 or shape.rank.get_length() != 4 or str(shape[3]) != "3":
            raise DehazeError(f"{path}: input is {inp.get_element_type()} {shape}, not uint8 N x H x W x 3 frames "
                              "(a tensor-I/O export, for analysis?); export a frame-I/O model for the runtime: "
                              "kanet export CKPT --out DIR (default --io frames)")
        self._request = self._compiled.create_infer_request()
        # throughput: one request per stream, waited on here (no Python callbacks on OpenVINO's threads)
        streams = self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if options.mode == "throughput" else 1
        self._parallel = [self._compiled.create_infer_request() for _ in range(streams)] if streams > 1 else []
        self.precision = runs_as(self._compiled)
        self.name = backend_name(ov) + (f" x{streams} requests" if self._parallel else "")

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if not self._parallel or len(batch) == 1:
            return self._request.infer({0: batch})[0]
        out = np.empty_like(batch)
        for start in range(0, len(batch), len(self._parallel)):
            started = list(zip(self._parallel, range(start, min(start + len(self._parallel), len(batch)))))
            for request, index in started:
                request.start_async({0: batch[index:index + 1]})
            for request, index in started:
                request.wait()
                out[index] = request.get_output_tensor(0).data[0]
        return out

    def close(self) -> None:
        self._request, self._parallel = None, []
        self._compiled = None
