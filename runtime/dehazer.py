"""`Dehazer`: one API over engines and ONNX models, for frames of any size.

Frames whose long side exceeds `max_side` are shrunk first and the result enlarged back;
frames larger than the model accepts go through overlapping tiles; frames smaller than
its profile minimum are mirror-padded and cropped back; batches larger than its profile
are split. Every result is uint8 BGR of the input's size.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from .artifacts import MIN_FRAME_SIZE, ExportFolder
from .backend import Backend, Timings
from .devices import gpu_index, parse_device
from .errors import DehazeError
from .frame_cost import oversize_warning
from .images import as_batch, as_bgr8, fit_long_side
from .manifest import read_manifest, verify_engine
from .openvino_backend import OpenVinoMissing, OpenVinoOptions, import_openvino
from .tiling import run_tiled
from .triton_backend import is_server_model

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino")
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
log = logging.getLogger("runtime")


def engine_unusable(device: int = 0) -> str | None:
    """Why no engine can run on GPU `device` here (no TensorRT, no usable GPU, a TensorRT-RTX without kernels
    for it); None when one can. What `--backend auto` decides on, and what `kanet doctor` reports."""
    from .cuda import CudaUnusable, compute_capability, device_count
    from .trt import TensorRTMissing, import_tensorrt, rtx_unsupported

    try:
        trt, flavour = import_tensorrt()
    except TensorRTMissing as exc:
        return str(exc)
    try:
        gpus = device_count()
    except CudaUnusable as exc:
        return str(exc)
    if gpus <= device:
        return f"GPU {device} does not exist ({gpus} usable)" if gpus else "no NVIDIA GPU is usable here"
    return rtx_unsupported(trt, compute_capability(device)) if flavour == "tensorrt_rtx" else None


def resolve_model(path: Path, backend: str, device: str = "auto", half: bool = False) -> Path:
    """The file to load: `path` itself, or in a `kanet export` folder the engine when one can run here
    (never with device 'cpu'), else the ONNX model: FP16 first where ONNX Runtime runs on a GPU (its CUDA
    provider), FP32 on the CPU; with `half` only the FP16 ones."""
    if not path.is_dir():
        return path
    folder = ExportFolder(path)
    engines = [folder.engine("fp16")] + ([] if half else [folder.engine("fp32")])
    gpu_onnx = backend in ("auto", "onnxruntime") and not half and _gpu_for_onnx_runtime(device) is None
    onnx = ([folder.fp16_onnx] if half else [folder.fp16_onnx, folder.fp32_onnx] if gpu_onnx
            else [folder.fp32_onnx, folder.fp16_onnx])
    if backend == "tensorrt" or (backend == "auto" and device != "cpu" and any(e.is_file() for e in engines)
                                 and engine_unusable(gpu_index(device)) is None):
        candidates = engines
    else:
        candidates = onnx
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DehazeError(f"{path}: holds none of {', '.join(c.name for c in candidates)} (written by `kanet export`"
                      f"{'; --half takes the FP16 models only' if half else ''})")


def _gpu_for_onnx_runtime(device: str) -> str | None:
    """Why ONNX Runtime cannot run on a GPU here (CPU-only package, --device cpu, no usable GPU); None when it can."""
    import onnxruntime as ort

    from .onnx_backend import GPU_PROVIDERS

    if device == "cpu":
        return "--device cpu"
    if not set(GPU_PROVIDERS) & set(ort.get_available_providers()):
        return "this ONNX Runtime has no GPU provider"
    from .cuda import CudaUnusable, device_count

    try:
        return None if device_count() > gpu_index(device) else "no NVIDIA GPU is usable here"
    except CudaUnusable as exc:
        return str(exc)


def _onnx_precision(path: Path) -> str | None:
    """'fp16' or 'fp32'; None for a file that is no readable ONNX model (the back-end that loads it says so)."""
    from .onnx_backend import onnx_precision  # ONNX Runtime and onnx load only where an ONNX model runs

    try:
        return onnx_precision(path)
    except Exception:  # onnx raises protobuf's DecodeError and others for damaged files
        return None


def _is_fp32(path: Path, requested: Path) -> bool:
    """Whether the ONNX model `path` is FP32. In an export folder its name says (reading a 200 MB model to find out
    takes seconds, and the back-end reads it again); a file named alone is read. An unreadable file is not FP32
    either: ONNX Runtime then says why in one line."""
    if requested.is_dir():
        return path == ExportFolder(requested).fp32_onnx
    return _onnx_precision(path) == "fp32"


def onnx_runner(device: str, fp32: Callable[[], bool] = lambda: True) -> tuple[str, str, str | None]:
    """(back-end, what runs, why better ones were passed over or None) for an ONNX model under `--backend auto`:
    ONNX Runtime's GPU provider where a GPU is usable, else (`fp32` models) OpenVINO where it is installed (it
    fuses attention and needs a third of ONNX Runtime's memory), else ONNX Runtime's CPU provider. `fp32()` is
    asked only off a GPU, the one place it decides (it may read the whole model)."""
    why_no_gpu = _gpu_for_onnx_runtime(device)
    if why_no_gpu is None:
        return "onnxruntime", "ONNX Runtime's GPU provider", None
    if not fp32():
        return "onnxruntime", "ONNX Runtime's CPU provider", f"not on a GPU: {why_no_gpu}; OpenVINO runs FP32 models"
    try:
        import_openvino()
    except OpenVinoMissing:
        return "onnxruntime", "ONNX Runtime's CPU provider", f"not on a GPU: {why_no_gpu}; OpenVINO is not installed"
    return "openvino", "OpenVINO's CPU plugin", f"not on a GPU: {why_no_gpu}"


def auto_backend(path: Path, requested: Path, device: str, half: bool) -> tuple[str, str]:
    """What `--backend auto` runs the resolved model `path` (an engine or an ONNX model) on, `requested` being what
    the user named, and one line saying why: an engine on TensorRT, an ONNX model as onnx_runner says."""
    if path.suffix in ENGINE_SUFFIXES:
        return "tensorrt", f"{path.name} on TensorRT"
    backend, where, passed = onnx_runner(device, fp32=lambda: not half and _is_fp32(path, requested))
    reasons = [f"no engine: {engine_unusable(gpu_index(device))}"] if requested.is_dir() and device != "cpu" else []
    reasons += [passed] if passed else []
    return backend, f"{path.name} on {where}" + (f" ({'; '.join(reasons)})" if reasons else "")


def _frame_limit(max_shape) -> tuple[int, int] | None:
    """The largest (H, W) the model takes in one call; None when either is unbounded (ONNX, a server model)."""
    if max_shape is None or None in max_shape[1:]:
        return None
    return max_shape[1], max_shape[2]


def _tile_size(tile, max_shape) -> tuple[int, int] | None:
    if tile is None or tile is False or tile == 0:
        return None
    height, width = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    if min(height, width) < MIN_FRAME_SIZE:
        raise DehazeError(f"tile {height}x{width}: tiles must be at least {MIN_FRAME_SIZE} x {MIN_FRAME_SIZE}")
    limit = _frame_limit(max_shape)
    if limit and (height > limit[0] or width > limit[1]):
        raise DehazeError(f"tile {height}x{width} is larger than the engine profile allows "
                          f"({limit[0]}x{limit[1]})")
    return height, width


def _server_backend(spec: str, backend: str, device: str, half: bool) -> Backend:
    """A model on a Triton server: the server decides what runs it and where, so flags choosing that are errors."""
    from .triton_backend import TritonBackend, parse_server_model

    chosen = [flag for flag, given in ((f"--backend {backend}", backend != "auto"),
                                       (f"--device {device}", device != "auto"), ("--half", half)) if given]
    if chosen:
        raise DehazeError(f"{spec} is a model on a Triton server, which decides how and where it runs; "
                          f"drop {' and '.join(chosen)}")
    return TritonBackend(parse_server_model(spec))


class Dehazer:
    """Dehaze uint8 BGR frames with an engine (TensorRT / TensorRT-RTX) or an ONNX model (ONNX Runtime, OpenVINO)."""

    def __init__(self, impl: Backend, tile=None, tile_overlap: int = 32, max_side: int | None = None) -> None:
        self._impl = impl
        if max_side is not None and max_side < MIN_FRAME_SIZE:
            raise DehazeError(f"max side {max_side}: must be at least {MIN_FRAME_SIZE} (the smallest frame KA-Net takes)")
        self._max_side = max_side
        self._tiling = not (tile is False or tile == 0)  # tiling off: frames over the profile are an error
        self._tile = _tile_size(tile, impl.max_shape)
        if tile_overlap < 0:
            raise DehazeError(f"tile overlap {tile_overlap}: must be >= 0")
        self._overlap = tile_overlap
        self._size_warned = False  # the oversize-frame warning is given once
        self.chosen: str | None = None  # with --backend auto: what runs, and why better back-ends were passed over

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", device: str | int = "auto", tile=None,
             tile_overlap: int = 32, half: bool = False, max_side: int | None = None, verify: bool = True,
             openvino: OpenVinoOptions | None = None, threads: int | None = None) -> Dehazer:
        """path: an engine (.plan with its .json manifest), a frame-I/O .onnx, a `kanet export` folder, or a model on
        a Triton server, grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL (runtime.triton_backend).
        device: auto, cpu, a GPU index or cuda:N (see runtime.devices). half: an FP16 model or none.
        tile: None = tile only frames larger than the model accepts (at its largest size);
        an int or (height, width) = tile frames larger than that; 0 or False = never tile.
        max_side: shrink host frames whose long side is larger to that first, and enlarge the result back
        to the frame's size (faster and lighter, less detail); None = full size.
        verify: check an engine's sha256 against its manifest before TensorRT deserialises it.
        openvino: precision, threads and model cache of backend 'openvino', also when 'auto' picks it (default: FP32,
        every core, no cache).
        threads: CPU threads of ONNX Runtime, or of OpenVINO where `openvino` leaves them open (default: every core).
        With backend 'auto', `.chosen` says what runs and why (see auto_backend)."""
        if backend not in BACKENDS:
            raise DehazeError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        device = parse_device(device)
        if openvino is not None and backend not in ("openvino", "auto"):
            raise DehazeError(f"OpenVINO options apply to the openvino backend, not {backend!r}")
        if is_server_model(path):
            return cls(_server_backend(str(path), backend, device, half), tile, tile_overlap, max_side)
        path = Path(path)
        if backend == "openvino" and half:
            raise DehazeError("--half takes the FP16 models, which OpenVINO does not run; OpenVINO runs the FP32 "
                              "model in BF16 with --ov-precision bf16")
        if backend == "openvino" and device not in ("auto", "cpu"):
            raise DehazeError(f"the openvino backend runs on the CPU; --device {device} needs tensorrt or onnxruntime")
        if not path.exists():
            raise DehazeError(f"{path}: no such model file or folder")
        requested, path = path, resolve_model(path, backend, device, half)
        chosen = None
        if backend == "auto" and (path.suffix in ENGINE_SUFFIXES or path.suffix == ".onnx"):
            backend, chosen = auto_backend(path, requested, device, half)
        if backend == "openvino" and threads and (openvino is None or openvino.threads is None):
            openvino = replace(openvino or OpenVinoOptions(), threads=threads)  # the caller's share of cores
        if path.suffix in ENGINE_SUFFIXES:
            if backend in ("onnxruntime", "openvino"):
                raise DehazeError(f"{path} is a TensorRT engine; "
                                  f"{'OpenVINO' if backend == 'openvino' else 'ONNX Runtime'} runs the .onnx models")
            if device == "cpu":
                raise DehazeError(f"{path} is a TensorRT engine, which runs on a GPU; --device cpu runs the "
                                  "ONNX model (give the .onnx file or the export folder)")
            from .engine_backend import EngineBackend

            manifest = read_manifest(path)
            if verify:
                verify_engine(path, manifest)
            impl = EngineBackend(path, manifest, gpu_index(device))
        elif path.suffix == ".onnx":
            if backend == "tensorrt":
                raise DehazeError(f"{path} is an ONNX model; the tensorrt backend runs engines: "
                                  f"kanet build {path} --out DIR")
            if backend == "openvino":
                from .openvino_backend import OpenVinoBackend

                impl = OpenVinoBackend(path, openvino or OpenVinoOptions())
            else:
                from .onnx_backend import OnnxBackend

                impl = OnnxBackend(path, gpu_index(device), threads)
        else:
            raise DehazeError(f"{path}: not a model; expected an engine (.plan), an .onnx file or an export folder "
                              "(a checkpoint is exported first: kanet export CKPT --out DIR)")
        if half and impl.precision != "fp16":
            impl.close()
            folder = ExportFolder(path.parent)
            raise DehazeError(f"{path} is an {impl.precision.upper()} model and --half asks for FP16: give "
                              f"{folder.fp16_onnx.name}, {folder.engine('fp16').name} or their export folder")
        dehazer = cls(impl, tile, tile_overlap, max_side)
        dehazer.chosen = chosen
        return dehazer

    @property
    def backend(self) -> str:
        return self._impl.name

    @property
    def precision(self) -> str:
        return self._impl.precision

    @property
    def max_shape(self) -> tuple[int | None, int | None, int | None] | None:
        """(N, H, W) the model takes in one call; None when unbounded (ONNX), a None in it for a dimension that is."""
        return self._impl.max_shape

    @property
    def min_shape(self) -> tuple[int, int, int]:
        return self._impl.min_shape

    def __call__(self, frames):
        """One H x W x 3 frame -> one frame; an N x H x W x 3 batch -> a batch; a list -> a list.
        Arrays in GPU memory (__cuda_array_interface__) need an engine and come back as a DeviceArray."""
        if hasattr(frames, "__cuda_array_interface__"):
            return self._impl.run_device(frames)
        if isinstance(frames, (list, tuple)):
            return self._run_list(frames)
        batch, single = as_batch(frames)
        out, _ = self._run(batch)
        return out[0] if single else out

    def infer_timed(self, frames) -> tuple[np.ndarray, Timings]:
        """Like calling the dehazer on numpy frames, plus milliseconds spent per stage (summed over tiles)."""
        batch, single = as_batch(frames)
        out, timings = self._run(batch)
        return (out[0] if single else out), timings

    def _run_list(self, frames) -> list[np.ndarray]:
        images = [as_bgr8(f, f"frame {i}") for i, f in enumerate(frames)]
        out: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for indices in by_shape.values():
            result, _ = self._run(np.stack([images[i] for i in indices]))
            for i, frame in zip(indices, result):
                out[i] = frame
        return out

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, Timings]:
        height, width = batch.shape[1:3]
        if self._max_side is None or max(height, width) <= self._max_side:
            return self._run_full(batch)
        small, timings = self._run_full(np.stack([fit_long_side(f, self._max_side) for f in batch]))
        return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in small]), timings

    def _run_full(self, batch: np.ndarray) -> tuple[np.ndarray, Timings]:
        if not self._size_warned:
            message = oversize_warning(*batch.shape[1:3], self.backend)
            if message:
                self._size_warned = True
                log.warning(message)
        spent: list[Timings] = []

        def infer(chunk: np.ndarray) -> np.ndarray:
            out, timings = self._fit(chunk)
            spent.append(timings)
            return out

        tile = self._tile_for(*batch.shape[1:3])
        max_batch = self.max_shape[0] if self.max_shape else None
        out = run_tiled(batch, tile, self._overlap, max_batch, infer) if tile else infer(batch)
        return out, sum(spent, Timings())

    def _tile_for(self, height: int, width: int) -> tuple[int, int] | None:
        limit = self._tile or _frame_limit(self.max_shape)
        if limit is None or (height <= limit[0] and width <= limit[1]):
            return None
        if not self._tiling:
            raise DehazeError(f"frame {height}x{width} is larger than the engine profile allows "
                              f"({limit[0]}x{limit[1]}) and tiling is off; turn tiling on (--tile auto) "
                              "or rebuild the engine with a larger --max")
        return limit

    def _fit(self, batch: np.ndarray) -> tuple[np.ndarray, Timings]:
        """Run batches within the profile: split large ones, pad small frames and batches, crop back."""
        n, height, width, _ = batch.shape
        min_n, min_h, min_w = self.min_shape
        max_n = (self.max_shape[0] if self.max_shape else None) or n
        pad_h, pad_w = max(0, min_h - height), max(0, min_w - width)
        outputs, timings = [], Timings()
        for start in range(0, n, max_n):
            part = batch[start:start + max_n]
            count = len(part)
            if pad_h or pad_w:
                part = np.pad(part, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
            if count < min_n:
                part = np.concatenate([part, np.repeat(part[-1:], min_n - count, axis=0)])
            out, spent = self._impl.run(np.ascontiguousarray(part))
            outputs.append(out[:count, :height, :width])
            timings += spent
        return np.concatenate(outputs) if len(outputs) > 1 else outputs[0], timings

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> Dehazer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
