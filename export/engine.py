"""ONNX -> serialized TensorRT or TensorRT-RTX engine, one code path for both.

`tensorrt` (10.x with the strongly-typed flag, or 11.x) is used when importable,
else `tensorrt_rtx`, which also builds ahead of time on a machine without a GPU.
Precision comes from the ONNX types (strongly typed network): an FP16 engine is
built from the FP16 ONNX, never from a builder flag.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from runtime.artifacts import MIN_FRAME_SIZE
from runtime.atomic import write_bytes
from runtime.cuda import compute_capability, device_count
from runtime.errors import DehazeError
from runtime.manifest import (EngineFile, EngineManifest, FileRecord, ShapeProfile, TensorRTBuild, read_manifest,
                              sha256_file)
from runtime.trt import TensorRTMissing
from runtime.trt import import_tensorrt as runtime_import_tensorrt
from runtime.trt import rtx_unsupported

from .errors import ExportError

RTX_TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120")


@dataclass(frozen=True)
class Profile:
    """Batch, height, width at min / opt / max."""

    min: tuple[int, int, int] = (1, 256, 256)
    opt: tuple[int, int, int] = (1, 720, 1280)
    max: tuple[int, int, int] = (4, 1088, 1920)

    def validate(self) -> None:
        for i, axis in enumerate(("batch", "height", "width")):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise ExportError(f"profile {axis}: need min <= opt <= max, got "
                                  f"{self.min[i]} / {self.opt[i]} / {self.max[i]}")
        if min(self.min[1:]) < MIN_FRAME_SIZE:
            raise ExportError(f"profile min {self.min}: frames must be at least {MIN_FRAME_SIZE} x {MIN_FRAME_SIZE}")


def import_tensorrt(prefer: str | None = None) -> tuple[ModuleType, str]:
    """(module, flavour): full TensorRT when importable, else TensorRT-RTX (shared with the runtime)."""
    try:
        return runtime_import_tensorrt(prefer)
    except TensorRTMissing as exc:
        raise ExportError(str(exc)) from None


@dataclass(frozen=True)
class BuildOptions:
    profile: Profile = Profile()
    # 4 GiB is too little for the default max profile (4 x 1088 x 1920): a tactic asks for 4.1 GiB.
    workspace_gib: float = 8.0
    optimization_level: int = 3
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX only; () = the current GPU or all targets

    def key(self, onnx_sha: str, flavour: str, version: str, targets: list[str]) -> str:
        """targets: the resolved compute capabilities, so an engine is never reused on another GPU."""
        blob = json.dumps({"onnx": onnx_sha, "flavour": flavour, "version": version, "targets": targets,
                           **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def network_flags(trt: ModuleType, flavour: str) -> int:
    major = int(trt.__version__.split(".")[0])
    if flavour == "tensorrt" and major < 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # TensorRT 11 and TensorRT-RTX networks are strongly typed


def layer_precisions(network) -> dict:
    """Output types of the compute layers of a parsed network: the precision it will run in."""
    compute = {"CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY", "NORMALIZATION", "SOFTMAX", "REDUCE",
               "ATTENTION_OUTPUT"}
    by_type: dict[str, dict[str, int]] = {}
    fp32_layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = str(layer.type).split(".")[-1]
        if kind not in compute:
            continue
        dtype = str(layer.get_output_type(0)).split(".")[-1]
        by_type.setdefault(kind, {}).setdefault(dtype, 0)
        by_type[kind][dtype] += 1
        if dtype == "FLOAT":
            fp32_layers.append(layer.name)
    return {"by_type": by_type, "fp32_layers": fp32_layers}


def parse_onnx(trt: ModuleType, flavour: str, onnx_path: Path, logger):
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, flavour))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT could not parse the model: {errors}")
    return builder, network, parser


def _gpus() -> int:
    try:
        return device_count()
    except DehazeError as exc:
        raise ExportError(str(exc)) from None


def engine_targets(trt: ModuleType, flavour: str, options: BuildOptions) -> list[str]:
    """The compute capabilities the engine is for, recorded in its manifest and cache key. TensorRT-RTX:
    the targets asked for ('current' resolved to this GPU's);
    ExportError for a target TensorRT-RTX has no kernels for (SM90: full TensorRT is needed)."""
    if flavour != "tensorrt_rtx":  # full TensorRT builds for the GPU it runs on: record which
        return [compute_capability(0)] if _gpus() else ["current"]
    targets = list(options.compute_capabilities) or (["current"] if _gpus() else list(RTX_TARGETS))
    resolved = []
    for target in targets:
        if target.lower() == "current":
            if not _gpus():
                raise ExportError("--compute-capability current needs a GPU here; name the targets instead: "
                                  f"{', '.join(RTX_TARGETS)}")
            target = compute_capability(0)
        elif not re.fullmatch(r"SM\d+", target.upper()):
            raise ExportError(f"compute capability {target!r}: expected SMxx ({', '.join(RTX_TARGETS)}) or 'current'")
        why = rtx_unsupported(trt, target)
        if why:
            raise ExportError(why)
        resolved.append(target.upper())
    return resolved


def builder_config(trt: ModuleType, builder, options: BuildOptions, precision: str):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    config.builder_optimization_level = options.optimization_level
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: FP32 parity must mean FP32 arithmetic
    return config


def _frames_io(tensor) -> bool:
    """uint8 N x H x W x 3 frames in the graph, or float NCHW tensors."""
    return tuple(tensor.shape)[-1] == 3


def add_profile(builder, config, tensor_in, profile: Profile) -> None:
    """One optimization profile over (batch, height, width), laid out as the input tensor is."""
    def dims(shape: tuple[int, int, int]) -> tuple[int, ...]:
        batch, height, width = shape
        return (batch, height, width, 3) if _frames_io(tensor_in) else (batch, 3, height, width)

    optimization = builder.create_optimization_profile()
    optimization.set_shape(tensor_in.name, dims(profile.min), dims(profile.opt), dims(profile.max))
    config.add_optimization_profile(optimization)


def set_targets_and_cache(trt: ModuleType, flavour: str, config, targets: list[str], engine_path: Path) -> Path:
    """TensorRT-RTX: the GPUs to compile for, and where its runtime keeps the kernels it compiles just in time on
    first run. Full TensorRT: its timing cache, reused across builds. Returns the cache file."""
    if flavour == "tensorrt_rtx":
        config.num_compute_capabilities = len(targets)
        for i, target in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), i)
        return engine_path.with_suffix(".runtime.cache")
    cache_file = engine_path.with_suffix(".timing.cache")
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache_file


def _tensor_io(tensor, layout: str) -> dict:
    return {"name": tensor.name, "dtype": str(tensor.dtype).split(".")[-1], "layout": layout}


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions = BuildOptions(),
                 precision: str = "fp16", fp32_nodes: list[str] | None = None, checkpoint_sha256: str | None = None,
                 prefer: str | None = None, attention_forms: list[dict] | None = None) -> EngineManifest:
    """Parse, configure, build, write the plan atomically and its manifest; return the manifest.
    fp32_nodes and attention_forms: what the ONNX's exporter recorded, copied into the manifest."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file")
    options.profile.validate()
    trt, flavour = import_tensorrt(prefer)
    targets = engine_targets(trt, flavour, options)  # before parsing: an unsupported GPU fails at once
    started = time.perf_counter()
    builder, network, _parser = parse_onnx(trt, flavour, onnx_path, trt.Logger(trt.Logger.WARNING))
    tensor_in, tensor_out = network.get_input(0), network.get_output(0)
    config = builder_config(trt, builder, options, precision)
    add_profile(builder, config, tensor_in, options.profile)
    cache_file = set_targets_and_cache(trt, flavour, config, targets, engine_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: {flavour} failed to build an engine (see the log above); if it says "
                          f"OutOfMemory, raise --workspace (now {options.workspace_gib:g} GiB) or lower --max")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(engine_path, serialized)
    if flavour == "tensorrt":
        cache_file.write_bytes(config.get_timing_cache().serialize())
    build_seconds = time.perf_counter() - started

    onnx_sha, prof, frames = sha256_file(onnx_path), options.profile, _frames_io(tensor_in)
    manifest = EngineManifest(
        engine=EngineFile(str(engine_path), sha256_file(engine_path), engine_path.stat().st_size),
        tensorrt=TensorRTBuild(flavour, trt.__version__), precision=precision,
        profiles=[ShapeProfile(list(prof.min), list(prof.opt), list(prof.max))],
        onnx=FileRecord(str(onnx_path), onnx_sha), checkpoint_sha256=checkpoint_sha256,
        cache_key=options.key(onnx_sha, flavour, trt.__version__, targets), targets=targets,
        fp32_nodes=fp32_nodes or [], layer_precisions=layer_precisions(network),
        attention_forms=attention_forms or [],
        io={"input": _tensor_io(tensor_in, "NHWC BGR" if frames else "NCHW RGB [-1, 1]"),
            "output": _tensor_io(tensor_out, "NHWC BGR" if frames else "NCHW RGB [0, 1]")},
        builder={"workspace_gib": options.workspace_gib, "optimization_level": options.optimization_level,
                 "strongly_typed": True, "cache_file": str(cache_file)},
        build_seconds=round(build_seconds, 2),
        host={"name": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version()},
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    manifest.write(engine_path)
    return manifest


def cached_engine(cache_dir: str | Path, onnx_path: str | Path, options: BuildOptions,
                  prefer: str | None = None) -> tuple[Path | None, str]:
    """(engine in cache_dir built from the same ONNX, options and TensorRT if intact, else None; the cache key)."""
    trt, flavour = import_tensorrt(prefer)
    key = options.key(sha256_file(onnx_path), flavour, trt.__version__, engine_targets(trt, flavour, options))
    for manifest_file in sorted(Path(cache_dir).glob("*.json")):
        plan = manifest_file.with_suffix(".plan")
        try:
            manifest = read_manifest(plan)
        except DehazeError:
            continue  # a damaged cache entry: built again
        if manifest.cache_key != key:
            continue
        if plan.is_file() and sha256_file(plan) == manifest.engine.sha256:
            return plan, key
    return None, key
