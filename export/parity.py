"""`kanet parity`: PyTorch FP32 against the exported models, on random and real frames.

Frame-I/O models (ONNX on ONNX Runtime's CPU provider or OpenVINO, engines on TensorRT or TensorRT-RTX, which
Polygraphy's TrtRunner does not load) run through the project's runtime, the code users deploy; tensor-I/O
models, for analysis, through Polygraphy's ONNX Runtime runner or OpenVINO. Cases outside an engine's profile
(or an ONNX model's fixed input shape) are listed as skipped, never tiled, so every compared frame is one
forward pass.
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
from runtime.errors import KanetError
from runtime.imagefile import read_image
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


@dataclass(frozen=True)
class Metrics:
    """How far a candidate's output lies from the reference, on [0, 1] values (8-bit steps for the shares)."""
    max_abs: float
    mean_abs: float
    psnr_db: float
    within_1_step: float
    within_2_steps: float
    nonfinite: int


def compare(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """Metrics between two outputs in [0, 1] (float) or 8-bit (uint8) units."""
    scale = 255.0 if reference.dtype == np.uint8 else 1.0
    ref = reference.astype(np.float64) / scale
    cand = candidate.astype(np.float64) / scale
    nonfinite = int(np.size(cand) - np.isfinite(cand).sum())
    diff = np.abs(np.nan_to_num(cand, nan=1e9) - ref)
    mse = float(np.mean(diff ** 2))
    steps = np.abs(np.round(np.clip(np.nan_to_num(cand), 0, 1) * 255) - np.round(ref * 255))
    return Metrics(max_abs=float(diff.max()), mean_abs=float(diff.mean()),
                   psnr_db=float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
                   within_1_step=float(np.mean(steps <= 1)), within_2_steps=float(np.mean(steps <= 2)),
                   nonfinite=nonfinite)


def failed_thresholds(metrics: Metrics, precision: str, io: str, limits: Thresholds) -> list[str]:
    """Names of the thresholds this pair fails."""
    failures = []
    if metrics.nonfinite:
        failures.append(f"{metrics.nonfinite} NaN/Inf values")
    if precision == "fp32":
        if io == "tensor" and metrics.max_abs > limits.fp32_max_abs:
            failures.append(f"max |diff| {metrics.max_abs:.2e} > {limits.fp32_max_abs:.0e}")
        if metrics.within_1_step < limits.fp32_within_1:
            failures.append(f"{metrics.within_1_step:.4%} of 8-bit values within 1 step < {limits.fp32_within_1:.0%}")
    else:
        if metrics.psnr_db < limits.fp16_psnr_db:
            failures.append(f"PSNR {metrics.psnr_db:.1f} dB < {limits.fp16_psnr_db} dB")
        if metrics.within_2_steps < limits.fp16_within_2:
            failures.append(f"{metrics.within_2_steps:.4%} of 8-bit values within 2 steps < {limits.fp16_within_2:.0%}")
    return failures


@dataclass(frozen=True)
class Comparison:
    """One candidate on one case against the reference."""
    case: str
    shape: list[int]
    candidate: str
    io: str
    backend: str
    precision: str
    metrics: Metrics
    failures: list[str]


@dataclass(frozen=True)
class Skip:
    case: str
    candidate: str
    reason: str


@dataclass
class ParityReport:
    thresholds: Thresholds
    results: list[Comparison]
    skipped: list[Skip]
    reference: str = "PyTorch FP32 (KANet.dehaze / FrameIO)"
    checkpoint_sha256: str | None = None  # set by callers that reuse reports across runs

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(not r.failures for r in self.results)

    def to_json(self) -> dict:
        results = [{**{k: v for k, v in asdict(r).items() if k != "metrics"}, **asdict(r.metrics)}
                   for r in self.results]
        return {"reference": self.reference, "thresholds": asdict(self.thresholds), "results": results,
                "skipped": [asdict(s) for s in self.skipped], "passed": self.passed,
                "checkpoint_sha256": self.checkpoint_sha256}

    @classmethod
    def from_json(cls, doc: dict) -> ParityReport:
        metric_names = Metrics.__dataclass_fields__
        results = [Comparison(**{k: v for k, v in r.items() if k not in metric_names},
                              metrics=Metrics(**{k: r[k] for k in metric_names})) for r in doc["results"]]
        return cls(Thresholds(**doc["thresholds"]), results, [Skip(**s) for s in doc["skipped"]],
                   doc["reference"], doc.get("checkpoint_sha256"))


def _input(path: Path) -> tuple[str, str, list[int | None]]:
    """(input name, 'frames' or 'tensor', dimensions with None where dynamic) of an exported model."""
    graph = onnx.load(str(path), load_external_data=False).graph
    tensor = graph.input[0].type.tensor_type
    kind = "frames" if tensor.elem_type == onnx.TensorProto.UINT8 else "tensor"
    return graph.input[0].name, kind, [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _to_tensor_input(frames: np.ndarray) -> np.ndarray:
    rgb = frames[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    return rgb * np.float32(2.0 / 255.0) - np.float32(1.0)


class _RuntimeCandidate:
    """A frame-I/O model (ONNX on ONNX Runtime's CPU provider or OpenVINO, or an engine) through the project's
    runtime: the code users deploy. Frames outside the back-end's shape limits (an engine profile, an ONNX model's
    fixed input shape) are skipped, so every compared frame is one forward pass."""
    io = "frames"

    def __init__(self, path: Path, backend: str, device: str, openvino: OpenVinoOptions | None,
                 dims: list[int | None] | None = None):
        from runtime import Dehazer  # an engine imports cuda-bindings and TensorRT: only when one is checked

        self.dehazer = Dehazer.load(path, backend=backend, device=device, openvino=openvino)
        self.backend, self.precision, self.dims = self.dehazer.backend, self.dehazer.precision, dims

    def fits(self, frames: np.ndarray) -> str | None:
        """Why these frames cannot be fed in one pass; None when they can."""
        if self.dims is not None:
            return _fixed_shape_problem(self.dims, frames.shape)
        low, high = self.dehazer.min_shape, self.dehazer.max_shape
        if high is None or all(lo <= n <= hi for lo, n, hi in zip(low, frames.shape[:3], high)):
            return None
        return f"outside the engine's profile {'x'.join(map(str, low))} .. {'x'.join(map(str, high))}"

    def __call__(self, feed: np.ndarray) -> np.ndarray:
        return np.asarray(self.dehazer(feed))

    def close(self) -> None:
        self.dehazer.close()


def _fixed_shape_problem(dims: list[int | None], feed_shape: tuple[int, ...]) -> str | None:
    if all(d is None or d == s for d, s in zip(dims, feed_shape)):
        return None
    return "not the model's fixed input shape " + "x".join("?" if d is None else str(d) for d in dims)


class _TensorCandidate:
    """A tensor-I/O model (float NCHW in [-1, 1], for analysis) on ONNX Runtime's CPU provider through Polygraphy,
    or compiled by OpenVINO; `precision` is then what the compiled model computes in (BF16 asked on a CPU without
    it runs FP32, and is held to the FP32 gates)."""
    io = "tensor"

    def __init__(self, path: Path, input_name: str, dims: list[int | None], precision: str,
                 openvino: OpenVinoOptions | None):
        self._input, self.dims, self.precision = input_name, dims, precision
        self._runner = self._request = None
        if openvino is None:
            self._runner = OnnxrtRunner(SessionFromOnnx(str(path), providers=["CPUExecutionProvider"]))
            self._runner.activate()
            self.backend = "onnxruntime:CPUExecutionProvider"
        else:
            ov, compiled = compile_cpu(path, openvino)
            self._request = compiled.create_infer_request()
            self.backend, self.precision = backend_name(ov), runs_as(compiled)

    def fits(self, frames: np.ndarray) -> str | None:
        n, h, w, c = frames.shape
        return _fixed_shape_problem(self.dims, (n, c, h, w))

    def __call__(self, feed: np.ndarray) -> np.ndarray:
        if self._request is not None:
            return self._request.infer({0: feed})[0]
        return np.asarray(next(iter(self._runner.infer({self._input: feed}).values())))

    def close(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
        self._runner = self._request = None


def _candidate(path: Path, device: str, precision: str = "fp32", openvino: OpenVinoOptions | None = None):
    """precision: what a tensor-I/O model computes in; frame-I/O models and engines say it themselves."""
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    if path.suffix in ENGINE_SUFFIXES:
        try:
            return _RuntimeCandidate(path, "tensorrt", device, None)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ExportError(f"{path}: {exc}") from None
    try:
        name, io, dims = _input(path)
        if io == "frames":
            static = None if all(d is None for d in dims[:3]) else dims
            return _RuntimeCandidate(path, "openvino" if openvino else "onnxruntime", "cpu", openvino, static)
        return _TensorCandidate(path, name, dims, precision, openvino)
    except KanetError:
        raise
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
               openvino: OpenVinoOptions | None = None) -> ParityReport:
    """candidates: label -> (ONNX or engine path, precision); engines run on `device` (runtime.devices), ONNX
    models on ONNX Runtime's CPU provider, or with `openvino` on OpenVINO at the precision it computes in (a
    candidate's own precision is then not read)."""
    runners = open_candidates(candidates, device, openvino)
    try:
        return compare_candidates(model, runners, cases, limits, progress)
    finally:
        close_candidates(runners)


def compare_candidates(model: KANet, runners: dict[str, tuple[object, str]], cases: list[tuple[str, np.ndarray]],
                       limits: Thresholds = Thresholds(), progress=None) -> ParityReport:
    """The report of `runners` (open_candidates) against PyTorch FP32 on `cases`."""
    frame_model = FrameIO(model).eval()
    results, skipped = [], []
    for case_name, frames in cases:
        reasons = {label: runner.fits(frames) for label, (runner, _) in runners.items()}
        if progress is not None:
            progress.update(sum(reason is not None for reason in reasons.values()))
        for label, reason in reasons.items():
            if reason is not None:
                skipped.append(Skip(case_name, label, reason))
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
            results.append(Comparison(case_name, list(frames.shape), label, runner.io, runner.backend, precision,
                                      metrics, failed_thresholds(metrics, precision, runner.io, limits)))
    return ParityReport(limits, results, skipped)


def write_report(report: ParityReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, default=float))
    return path
