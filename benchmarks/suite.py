"""One `kanet bench` run: models, exports, backends, timings, FLOPs, video, targets -> a results document."""
from __future__ import annotations

import gc
import hashlib
import importlib.util
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from export.cache import bench_dir, user_cache_dir
from export.engine import BuildOptions, Profile
from export.pipeline import export_checkpoint
from runtime.artifacts import ExportFolder
from runtime.manifest import EngineManifest, read_manifest
from runtime.openvino_backend import OpenVinoOptions
from runtime.progress import progress
from training import KANet, load_checkpoint, save_checkpoint

from . import backends as bk
from . import names as nm
from . import profiling, system, targets, video
from .flops import count_flops
from .harness import Settings, Shape, measure_shape

REPO = Path(__file__).resolve().parents[1]
RANDOM_SEED = 0
CPU_COMPILE_REASON = ("torch.compile on CPU: inductor compiles every resolution and batch anew, about a minute "
                      "each on 2 cores (cold cache), which adds half again to the default CPU run for a gain "
                      "within noise of autocast; "
                      "add it with --backends torch-eager,torch-autocast,torch-compile,onnxruntime")


@dataclass
class BenchConfig:
    shapes: list[Shape]
    settings: Settings = field(default_factory=Settings)
    backends: tuple[str, ...] | None = None  # None: every backend that runs here (compile not on CPU)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None
    export_dir: Path | None = None
    cache_dir: Path | None = None  # export.cache: None is the user's cache folder
    video_size: tuple[int, int] | None = None  # None: no end-to-end video
    video_frames: int = 10
    clip_photo: Path | None = None  # the photograph the end-to-end clip pans across; needed with video_size
    profile: str = "missed"  # per-op profiles for CPU targets: "missed", "all" (every evaluated one) or "off"
    progress: bool | None = None  # as runtime.progress takes it: None a bar on a terminal, lines in a log; False none


@dataclass
class Models:
    model: KANet
    weights: str
    export_dir: Path | None
    engine_manifest: dict | None


def _state_key(model: KANet, extra: str) -> str:
    """Hash of the weights, the network and export code, and the export options: the export cache key."""
    digest = hashlib.sha256(extra.encode())
    for name, tensor in sorted({**model.state_dict(), **model.rff_buffers()}.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    for source in sorted((REPO / "training").rglob("*.py")) + sorted((REPO / "export").rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def engine_options(shapes: list[Shape]) -> BuildOptions:
    """A profile covering every benchmarked shape, tuned for the largest batch-1 frame."""
    largest = max((s for s in shapes if s.batch == 1), key=lambda s: s.height * s.width, default=shapes[0])
    return BuildOptions(Profile(
        (1, min(s.height for s in shapes), min(s.width for s in shapes)),
        (1, largest.height, largest.width),
        (max(s.batch for s in shapes), max(s.height for s in shapes), max(s.width for s in shapes))))


def prepare_models(config: BenchConfig, want_onnx: bool, want_engine: bool) -> Models:
    if config.checkpoint:
        model = load_checkpoint(config.checkpoint)
        weights = f"checkpoint {config.checkpoint}"
    else:
        torch.manual_seed(RANDOM_SEED)
        model = KANet(rff_seed=RANDOM_SEED).eval()
        weights = (f"random KA-Net (seed {RANDOM_SEED}), no checkpoint given: timings do not depend on the "
                   "weights (no data-dependent control flow)")
    export_dir = config.export_dir
    if export_dir is None and want_onnx:
        options = engine_options(config.shapes)
        key = _state_key(model, repr(options) if want_engine else "onnx only")
        export_dir = bench_dir(user_cache_dir(config.cache_dir)) / key[:16]
        folder = ExportFolder(export_dir)
        ready = folder.record.is_file() and (not want_engine or folder.engine("fp16").is_file())
        if not ready:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = config.checkpoint or save_checkpoint(model, Path(tmp) / "kanet_random_seed0.pt")
                export_checkpoint(checkpoint, export_dir, options=options, cache_dir=config.cache_dir,
                                  engine=want_engine)
    plan = ExportFolder(export_dir).engine("fp16") if export_dir else None
    manifest = read_manifest(plan) if plan and plan.is_file() else None
    return Models(model, weights, export_dir, manifest)


def _ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def plan_backends(config: BenchConfig) -> tuple[list[str], dict[str, str]]:
    """(backends to run, {backend: why it is not run}) for this machine and the requested set."""
    on_gpu = config.device.type == "cuda"
    wanted = list(config.backends or nm.ALL)
    skipped: dict[str, str] = {}
    for name in list(wanted):
        reason = None
        if name == nm.TORCH_COMPILE and config.backends is None and not on_gpu:
            reason = CPU_COMPILE_REASON
        elif name == nm.ORT_FP16 and not (on_gpu and _ort_has_cuda()):
            reason = ("needs a GPU and onnxruntime-gpu: ONNX Runtime's CPU provider has few FP16 kernels, "
                      "so it would time inserted casts, not FP16 inference")
        elif name in (nm.OPENVINO, nm.OPENVINO_BF16) and not importlib.util.find_spec("openvino"):
            reason = "openvino is not installed"
        elif name == nm.TENSORRT and not on_gpu:
            reason = "needs an NVIDIA GPU (the engine is built ahead of time on CPU, but runs only on a GPU)"
        elif name == nm.TENSORRT and not (importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_rtx")):
            reason = "neither tensorrt nor tensorrt_rtx is installed"
        if reason:
            skipped[name] = reason
            wanted.remove(name)
    return wanted, skipped


def make_backends(names: list[str], models: Models, device: torch.device, skipped: dict[str, str]) -> list[bk.BenchBackend]:
    folder = ExportFolder(models.export_dir or Path())  # no export folder: every runtime back-end is skipped
    files = {nm.ORT: (folder.fp32_onnx, "onnxruntime"), nm.ORT_FP16: (folder.fp16_onnx, "onnxruntime"),
             nm.OPENVINO: (folder.fp32_onnx, "openvino"), nm.OPENVINO_BF16: (folder.fp32_onnx, "openvino"),
             nm.TENSORRT: (folder.engine("fp16"), "tensorrt")}
    made: list[bk.BenchBackend] = []
    for name in names:
        if name.startswith("torch-"):
            made.append(bk.TorchBackend(name, models.model, device))
            continue
        path, runtime_backend = files[name]
        if models.export_dir is None or not path.is_file():
            skipped[name] = f"no {path.name} in the export folder {models.export_dir}"
            continue
        try:
            openvino = OpenVinoOptions("bf16" if name == nm.OPENVINO_BF16 else "fp32") \
                if runtime_backend == "openvino" else None
            made.append(bk.RuntimeBackend(name, path, runtime_backend, device, openvino))
        except Exception as exc:  # the runtime refuses (incompatible engine, provider...): a finding
            skipped[name] = f"runtime could not load {path.name}: {str(exc).strip().splitlines()[0]}"
    return made


def engine_summary(manifest: EngineManifest | None) -> dict | None:
    if manifest is None:
        return None
    return {"path": manifest.engine.path, "mib": round(manifest.engine.bytes / 2**20, 1),
            "build_seconds": manifest.build_seconds, "tensorrt": asdict(manifest.tensorrt),
            "targets": manifest.targets, "profile": asdict(manifest.profiles[0])}


def best_batches(results: list[dict]) -> list[dict]:
    """Per backend and resolution, the batch with the highest throughput."""
    best: dict[tuple[str, int, int], dict] = {}
    for row in results:
        key = (row["backend"], row["height"], row["width"])
        if "fps" in row and (key not in best or row["fps"] > best[key]["fps"]):
            best[key] = row
    return [{"backend": r["backend"], "resolution": f"{r['height']}x{r['width']}", "batch": r["batch"],
             "fps": r["fps"]} for r in best.values()]


def run_video(config: BenchConfig, doc: dict, workdir: Path) -> dict:
    """`kanet run` on the model of the best runtime backend that ran (the engine, else ONNX Runtime)."""
    if config.video_size is None:
        return {"skipped": "not requested (--no-video)"}
    ran = {r["backend"] for r in doc["results"] if "latency_ms" in r}
    reference = next((n for n in (nm.TENSORRT, nm.ORT, nm.ORT_FP16) if n in ran), None)
    if reference is None:
        return {"skipped": "no runtime backend ran (the video path runs the runtime: ONNX Runtime or an engine)"}
    height, width = config.video_size
    result = video.end_to_end(Path(doc["backends"][reference]["model"]), height, width, config.video_frames, workdir,
                              config.clip_photo, device=str(config.device))
    return {**result, "reference_backend": reference}


def profile_targets(doc: dict, models: Models, which: str) -> dict:
    """Per-op-type profiles for the CPU targets (ORT against PyTorch eager at that shape):
    the missed ones, or with which="all" every evaluated one."""
    found = {}
    for target in doc["targets"]:
        wanted = target["met"] is False if which == "missed" else target["met"] is not None
        if not wanted or not target["id"].startswith("cpu_ort_vs_eager_"):
            continue
        height, width = (int(v) for v in target["id"].rsplit("_", 1)[1].split("x"))
        frames = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
        found[target["id"]] = {"onnxruntime": profiling.onnxruntime_ops(ExportFolder(models.export_dir).fp32_onnx, frames),
                               "torch_eager": profiling.torch_ops(models.model, frames)}
    return found


def run_suite(config: BenchConfig, workdir: Path) -> dict:
    if config.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # what a tuned PyTorch deployment sets
    names, skipped = plan_backends(config)
    want_engine = nm.TENSORRT in names
    models = prepare_models(config, want_onnx=any(not n.startswith("torch-") for n in names), want_engine=want_engine)
    live = make_backends(names, models, config.device, skipped)
    try:
        doc = _measure(config, models, live, skipped)
    finally:  # free sessions and engines before `kanet run` loads its own (1080p needs GiBs)
        for backend in live:
            backend.close()
        live.clear()
        gc.collect()
        if config.device.type == "cuda":
            torch.cuda.empty_cache()
    doc["video"] = run_video(config, doc, workdir)
    doc["targets"] = targets.evaluate(doc)
    if config.profile != "off" and models.export_dir:
        doc["profiles"] = profile_targets(doc, models, config.profile)
    return doc


def _measure(config: BenchConfig, models: Models, live: list[bk.BenchBackend], skipped: dict[str, str]) -> dict:
    machine = system.describe(config.device)  # before the run: load average, start time
    flops = {s.label: count_flops(s.batch, s.height, s.width) for s in config.shapes}
    results: list[dict] = []
    with progress(len(config.shapes), config.progress, "bench", "shape") as bar:
        for shape in config.shapes:
            results += measure_shape(live, shape, config.settings, flops[shape.label]["total"], config.progress)
            bar.update(1)
    doc = {
        "format": nm.RESULTS_FORMAT, "version": 1,
        "system": machine,
        "settings": {**config.settings.to_dict(), "shapes": [s.label for s in config.shapes],
                     "cudnn_benchmark": config.device.type == "cuda"},
        "model": {"weights": models.weights, "export_dir": str(models.export_dir) if models.export_dir else None},
        "timing": ("latency = host wall clock, uint8 BGR N x H x W x 3 frames in -> uint8 frames out, "
                   "warm-up excluded, backends interleaved round by round; split_ms = median per-stage times "
                   "(CUDA events for PyTorch on a GPU, runtime.Dehazer.infer_timed for ONNX Runtime/TensorRT); "
                   "fps = batch / mean latency; achieved_tflops = FLOPs per batch / p50"),
        "flops": {"method": "torch.utils.flop_counter.FlopCounterMode on meta tensors, multiply-add = 2",
                  "shapes": flops},
        "backends": {b.name: b.describe() for b in live},
        "skipped": skipped,
        "engine": engine_summary(models.engine_manifest),
        "results": results,
        "best_batch": best_batches(results),
    }
    return doc
