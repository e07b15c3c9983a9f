"""`kanet parity`: PyTorch FP32 against the exported models, on random and real frames.

ONNX candidates run through Polygraphy's ONNX Runtime runner, or on OpenVINO's CPU plugin; engines (TensorRT or
TensorRT-RTX, which Polygraphy's TrtRunner does not load) through the project's runtime,
the code users deploy. Cases outside an engine's profile (or an ONNX model's fixed input
shape) are listed as skipped, never tiled, so every compared frame is one forward pass.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.logger import G_LOGGER

from runtime.dehazer import ENGINE_SUFFIXES
from runtime.imagefile import read_image
from runtime.manifest import read_manifest
from runtime.openvino_backend import OpenVinoOptions, backend_name, compile_cpu, runs_as
from training import KANet

from .errors import ExportError
from .wrappers import FrameIO

G_LOGGER.module_severity = G_LOGGER.WARNING  # session-creation chatter would break up the progress bar
DEFAULT_SIZES = ((1, 96, 128), (2, 75, 101), (1, 130, 66))
PHOTO_LONG_SIDE = 181  # not a multiple of 16, small enough for a CPU run


@dataclass(frozen=True)
class Thresholds:
    fp32_max_abs: float = 1e-4        # on [0, 1] tensors (tensor I/O)
    fp32_within_1: float = 1.0        # share of 8-bit values within 1 step
    fp16_psnr_db: float = 45.0
    fp16_within_2: float = 0.99


def frame_cases(sizes=DEFAULT_SIZES, photos: Path | None = None, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 N x H x W x 3 BGR) pairs: random frames of each size, then real photographs."""
    rng = np.random.default_rng(seed)
    cases = [(f"random_{n}x{h}x{w}", rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)) for n, h, w in sizes]
    if photos is not None:
        images = []
        for path in sorted(Path(photos).glob("*.png")):
            image = read_image(path, cv2.IMREAD_COLOR)
            if image is None:
                raise ExportError(f"{path}: not a readable image")
            scale = PHOTO_LONG_SIDE / max(image.shape[:2])
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
            cases.append((f"photo_{path.stem}", image[None]))
            images.append(image)
        same = [im for im in images if im.shape == images[0].shape] if images else []
        if len(same) >= 2:
            cases.append(("photo_batch", np.stack(same[:2])))
    return cases


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Metrics between two outputs in [0, 1] (float) or 8-bit (uint8) units."""
    scale = 255.0 if reference.dtype == np.uint8 else 1.0
    ref = reference.astype(np.float64) / scale
    cand = candidate.astype(np.float64) / scale
    nonfinite = int(np.size(cand) - np.isfinite(cand).sum())
    diff = np.abs(np.nan_to_num(cand, nan=1e9) - ref)
    mse = float(np.mean(diff ** 2))
    steps = np.abs(np.round(np.clip(np.nan_to_num(cand), 0, 1) * 255) - np.round(ref * 255))
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
        "within_1_step": float(np.mean(steps <= 1)),
        "within_2_steps": float(np.mean(steps <= 2)),
        "nonfinite": nonfinite,
    }


def _input(path: Path) -> tuple[str, str, list[int | None]]:
    """(input name, 'frames' or 'tensor', dimensions with None where dynamic) of an exported model."""
    graph = onnx.load(str(path), load_external_data=False).graph
    tensor = graph.input[0].type.tensor_type
    kind = "frames" if tensor.elem_type == onnx.TensorProto.UINT8 else "tensor"
    return graph.input[0].name, kind, [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _to_tensor_input(frames: np.ndarray) -> np.ndarray:
    rgb = frames[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    return rgb * np.float32(2.0 / 255.0) - np.float32(1.0)


def check(metrics: dict, precision: str, io: str, limits: Thresholds) -> list[str]:
    """Names of the thresholds this pair fails."""
    failures = []
    if metrics["nonfinite"]:
        failures.append(f"{metrics['nonfinite']} NaN/Inf values")
    if precision == "fp32":
        if io == "tensor" and metrics["max_abs"] > limits.fp32_max_abs:
            failures.append(f"max |diff| {metrics['max_abs']:.2e} > {limits.fp32_max_abs:.0e}")
        if metrics["within_1_step"] < limits.fp32_within_1:
            failures.append(f"{metrics['within_1_step']:.4%} of 8-bit values within 1 step < {limits.fp32_within_1:.0%}")
    else:
        if metrics["psnr_db"] < limits.fp16_psnr_db:
            failures.append(f"PSNR {metrics['psnr_db']:.1f} dB < {limits.fp16_psnr_db} dB")
        if metrics["within_2_steps"] < limits.fp16_within_2:
            failures.append(f"{metrics['within_2_steps']:.4%} of 8-bit values within 2 steps < {limits.fp16_within_2:.0%}")
    return failures


class _OnnxCandidate:
    def __init__(self, path: Path, precision: str):
        self.runner = OnnxrtRunner(SessionFromOnnx(str(path), providers=["CPUExecutionProvider"]))
        self.runner.activate()
        self.input_name, self.io, self.dims = _input(path)
        self.precision = precision
        self.backend = "onnxruntime:CPUExecutionProvider"

    def fits(self, frames: np.ndarray) -> str | None:
        """Why these frames cannot be fed (an ONNX model exported with a fixed shape); None when they can."""
        n, h, w, c = frames.shape
        feed = (n, h, w, c) if self.io == "frames" else (n, c, h, w)
        if all(d is None or d == s for d, s in zip(self.dims, feed)):
            return None
        return "not the model's fixed input shape " + "x".join("?" if d is None else str(d) for d in self.dims)

    def __call__(self, feed: np.ndarray) -> np.ndarray:
        return np.asarray(next(iter(self.runner.infer({self.input_name: feed}).values())))

    def close(self) -> None:
        self.runner.deactivate()


class _OpenVinoCandidate(_OnnxCandidate):
    """An ONNX model of either I/O on OpenVINO; `precision` is what the compiled model computes in (BF16 asked on
    a CPU without it runs FP32, and is held to the FP32 gates)."""

    def __init__(self, path: Path, options: OpenVinoOptions):
        ov, compiled = compile_cpu(path, options)
        self.request = compiled.create_infer_request()
        self.input_name, self.io, self.dims = _input(path)
        self.precision = runs_as(compiled)
        self.backend = backend_name(ov)

    def __call__(self, feed: np.ndarray) -> np.ndarray:
        return self.request.infer({0: feed})[0]

    def close(self) -> None:
        self.request = None


class _EngineCandidate:
    io = "frames"

    def __init__(self, path: Path, device: str, precision: str):
        from runtime import Dehazer  # imports cuda-bindings and TensorRT: only when an engine is checked

        self.precision = precision
        profile = read_manifest(path)["profiles"][0]
        self.min, self.max = profile["min"], profile["max"]
        self.dehazer = Dehazer.load(path, backend="tensorrt", device=device)
        self.backend = self.dehazer.backend

    def fits(self, frames: np.ndarray) -> str | None:
        if all(lo <= n <= hi for lo, n, hi in zip(self.min, frames.shape[:3], self.max)):
            return None
        return f"outside the engine's profile {'x'.join(map(str, self.min))} .. {'x'.join(map(str, self.max))}"

    def __call__(self, feed: np.ndarray) -> np.ndarray:
        return np.asarray(self.dehazer(feed))

    def close(self) -> None:
        self.dehazer.close()


def _candidate(path: Path, device: str, precision: str = "fp32", openvino: OpenVinoOptions | None = None):
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    if path.suffix in ENGINE_SUFFIXES:
        try:
            return _EngineCandidate(path, device, precision)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ExportError(f"{path}: {exc}") from None
    if openvino is not None:
        return _OpenVinoCandidate(path, openvino)
    try:
        return _OnnxCandidate(path, precision)
    except Exception as exc:  # onnx and ONNX Runtime raise their own types (DecodeError, InvalidProtobuf, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: not an ONNX model ONNX Runtime can load ({reason})") from None


def open_candidates(candidates: dict[str, tuple[Path, str]], device: str = "auto",
                    openvino: OpenVinoOptions | None = None) -> dict[str, tuple[object, str]]:
    """label -> (runner, precision it computes in) for candidates label -> (ONNX or engine path, precision): every
    model is opened here, so a file that is not one is a one-line error before any comparison starts."""
    runners: dict[str, tuple[object, str]] = {}
    try:
        for label, (path, precision) in candidates.items():
            runner = _candidate(Path(path), device, precision, openvino)
            runners[label] = (runner, runner.precision)
    except BaseException:
        close_candidates(runners)
        raise
    return runners


def close_candidates(runners: dict[str, tuple[object, str]]) -> None:
    for runner, _ in runners.values():
        runner.close()


def run_parity(model: KANet, candidates: dict[str, tuple[Path, str]], cases: list[tuple[str, np.ndarray]],
               limits: Thresholds = Thresholds(), progress=None, device: str = "auto",
               openvino: OpenVinoOptions | None = None) -> dict:
    """candidates: label -> (ONNX or engine path, precision); engines run on `device` (runtime.devices), ONNX
    models on ONNX Runtime's CPU provider, or with `openvino` on OpenVINO at the precision it computes in (a
    candidate's own precision is then not read). Returns the report; report['passed'] says it all."""
    runners = open_candidates(candidates, device, openvino)
    try:
        return compare_candidates(model, runners, cases, limits, progress)
    finally:
        close_candidates(runners)


def compare_candidates(model: KANet, runners: dict[str, tuple[object, str]], cases: list[tuple[str, np.ndarray]],
                       limits: Thresholds = Thresholds(), progress=None) -> dict:
    """The report of `runners` (open_candidates) against PyTorch FP32 on `cases`."""
    frame_model = FrameIO(model).eval()
    results, skipped = [], []
    for case_name, frames in cases:
        reasons = {label: runner.fits(frames) for label, (runner, _) in runners.items()}
        if progress is not None:
            progress.update(sum(reason is not None for reason in reasons.values()))
        for label, reason in reasons.items():
            if reason is not None:
                skipped.append({"case": case_name, "candidate": label, "reason": reason})
        if all(reason is not None for reason in reasons.values()):
            continue  # no reference needed: the PyTorch passes are the slow part on a CPU
        with torch.no_grad():
            ref_frames = frame_model(torch.from_numpy(frames)).numpy()
            tensor_in = _to_tensor_input(frames)
            ref_tensor = model.dehaze(torch.from_numpy(tensor_in)).numpy()
        for label, (runner, precision) in runners.items():
            if reasons[label] is not None:
                continue
            if progress is not None:
                progress.update(1)
            output = runner(frames if runner.io == "frames" else tensor_in)
            metrics = compare(ref_frames if runner.io == "frames" else ref_tensor, output)
            failures = check(metrics, precision, runner.io, limits)
            results.append({"case": case_name, "shape": list(frames.shape), "candidate": label, "io": runner.io,
                            "backend": runner.backend, "precision": precision, **metrics, "failures": failures})
    return {"reference": "PyTorch FP32 (KANet.dehaze / FrameIO)", "thresholds": asdict(limits),
            "results": results, "skipped": skipped,
            "passed": bool(results) and all(not r["failures"] for r in results)}


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    return path
