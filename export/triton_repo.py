"""A Triton Inference Server model repository from a `kanet export` folder.

One model folder per way of serving the export, each `NAME/config.pbtxt` + `NAME/1/model.<ext>`:
the engine (platform tensorrt_plan, GPU; its manifest beside it as `1/model.json`), the FP16 ONNX on
ONNX Runtime's CUDA execution provider (GPU) and the FP32 ONNX on ONNX Runtime's CPU provider. Every
model takes and returns uint8 N x H x W x 3 BGR frames, named as the export names them.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from runtime.artifacts import ExportFolder
from runtime.manifest import EngineManifest, manifest_path, read_manifest
from runtime.onnx_backend import model_precision

from .engine import BuildOptions
from .errors import ExportError

TENSORRT_MODEL, ONNX_GPU_MODEL, ONNX_CPU_MODEL = "kanet_tensorrt", "kanet_onnx_gpu", "kanet_onnx_cpu"
MODEL_NAMES = (TENSORRT_MODEL, ONNX_GPU_MODEL, ONNX_CPU_MODEL)
# A 720p frame takes tens of milliseconds even on a large GPU: waiting 2 ms for a second request to batch
# with costs little latency and lets concurrent streams share a call.
MAX_QUEUE_DELAY_US = 2000
DEFAULT_MAX_BATCH = BuildOptions().profile.max[0]  # what `kanet export` builds engines for


@dataclass(frozen=True)
class FrameIO:
    """The names of a frame-I/O model's input and output tensor."""
    input: str
    output: str


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str          # "tensorrt_plan" or "onnxruntime_onnx"
    kind: str              # "KIND_GPU" or "KIND_CPU"
    source: Path           # the export file served
    max_batch_size: int
    io: FrameIO
    precision: str         # what the served file computes in, "fp32" or "fp16": `kanet run` reports it


@dataclass(frozen=True)
class TritonRepository:
    path: Path
    models: list[TritonModel]
    skipped: list[str]     # why a model the export could give was not written
    tensorrt_version: str | None  # the version Triton's container must have for the plan, when one was written


def onnx_frame_io(model: onnx.ModelProto, path: Path) -> FrameIO:
    """The input and output names of a frame-I/O ONNX (uint8 N x H x W x 3) read from `path`; ExportError for
    anything else."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(f"{path}: {len(inputs)} inputs and {len(graph.output)} outputs; a frame-I/O export "
                              "has one of each")
    for value in (inputs[0], graph.output[0]):
        tensor = value.type.tensor_type
        dims = [d.dim_value or -1 for d in tensor.shape.dim]
        # the exporter's output channel dimension is symbolic (a Cast's): 3 or unknown both do
        if tensor.elem_type != onnx.TensorProto.UINT8 or len(dims) != 4 or dims[-1] not in (3, -1):
            raise ExportError(f"{path}: {value.name} is not uint8 N x H x W x 3 frames (a tensor-I/O export?); "
                                  "Triton serves the frame-I/O models: kanet export CKPT --out DIR (default --io frames)")
    return FrameIO(inputs[0].name, graph.output[0].name)


def engine_frame_io(manifest: EngineManifest, plan: Path) -> FrameIO:
    """The engine's tensor names from its manifest; ExportError unless it takes uint8 NHWC BGR frames."""
    io = manifest.io
    try:
        ends = [io[key] for key in ("input", "output")]
        if any(end["dtype"].upper() != "UINT8" or end["layout"] != "NHWC BGR" for end in ends):
            raise ExportError(f"{plan}: its manifest gives {ends[0]['dtype']} {ends[0]['layout']} in, not uint8 "
                                  "NHWC BGR frames (a tensor-I/O engine?); build one from the frame-I/O ONNX")
        return FrameIO(ends[0]["name"], ends[1]["name"])
    except (KeyError, TypeError, AttributeError):
        raise ExportError(f"{plan}: its manifest has no io names (input/output name, dtype, layout); "
                              "rebuild the engine with `kanet build`") from None


def _dims(low: int, high: int) -> int:
    return low if low == high else -1  # -1: variable in Triton, within the engine profile


def config_text(model: TritonModel, spatial: tuple[int, int] = (-1, -1), instances: int = 1) -> str:
    """The model's config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    dims = f"[ {spatial[0]}, {spatial[1]}, 3 ]"
    lines = [f'name: "{model.name}"', f'platform: "{model.platform}"', f"max_batch_size: {model.max_batch_size}"]
    for section, name in (("input", model.io.input), ("output", model.io.output)):
        lines += [f"{section} [", "  {", f'    name: "{name}"', "    data_type: TYPE_UINT8",
                  f"    dims: {dims}", "  }", "]"]
    lines += [f'parameters {{ key: "precision" value: {{ string_value: "{model.precision}" }} }}',
              "dynamic_batching {", f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}", "}",
              f"instance_group [ {{ count: {instances} kind: {model.kind} }} ]"]
    if model.name == ONNX_GPU_MODEL:
        # HEURISTIC: frame sizes vary, and an exhaustive cuDNN search on each new size stalls a video stream
        lines += ["optimization { execution_accelerators { gpu_execution_accelerator: [ {",
                  '  name: "cuda"',
                  '  parameters { key: "cudnn_conv_algo_search" value: "HEURISTIC" }',
                  '  parameters { key: "cudnn_conv_use_max_workspace" value: "1" }',
                  "} ] } }"]
    return "\n".join(lines) + "\n"


def check_paths(export_dir: Path, out: Path, overwrite: bool) -> ExportFolder:
    folder = ExportFolder(export_dir)
    if not export_dir.is_dir() or not (folder.fp32_onnx.is_file() or folder.fp16_onnx.is_file()):
        raise ExportError(f"{export_dir}: not a `kanet export` folder (no {folder.fp32_onnx.name} or "
                              f"{folder.fp16_onnx.name}); export first: kanet export CKPT --out {export_dir}")
    resolved_out, resolved_export = out.resolve(), export_dir.resolve()
    if resolved_out == resolved_export or resolved_export in resolved_out.parents:
        raise ExportError(f"{out}: the repository would lie inside the export folder {export_dir}; give a "
                              "folder outside it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: exists and is not empty; --overwrite replaces the models and README.md "
                              "kanet writes there (other entries are kept)")
    return folder


def _readme(repo: TritonRepository) -> str:
    rows = "\n".join(f"| `{m.name}` | {m.platform} | {m.kind} | `{m.source.name}` | {m.max_batch_size} | "
                     f"`{m.io.input}` -> `{m.io.output}` |" for m in repo.models)
    gpu = any(m.kind == "KIND_GPU" for m in repo.models)
    lines = ["# KA-Net Triton model repository", "",
             "Written by `kanet triton`. Every model takes uint8 N x H x W x 3 BGR frames and returns the dehazed "
             "frames in the same layout (H and W variable, at least 33).", "",
             "| model | platform | instances | served file | max batch | tensors |", "|---|---|---|---|---|---|",
             rows, "", "Start Triton's container on it (pick a release `<xx.yy>` from NVIDIA's NGC catalogue):", "",
             "```bash",
             f"docker run --rm {'--gpus all ' if gpu else ''}-p 8000:8000 -p 8001:8001 -p 8002:8002 "
             f"-v {repo.path.resolve()}:/models nvcr.io/nvidia/tritonserver:<xx.yy>-py3 "
             "tritonserver --model-repository=/models", "```", ""]
    if repo.tensorrt_version:
        lines += [f"The plan in `{TENSORRT_MODEL}/1/` was built with TensorRT {repo.tensorrt_version} "
                  f"(`{TENSORRT_MODEL}/1/model.json`, its manifest, says so and for which GPUs). The container's "
                  "TensorRT must be that same version (NVIDIA's Triton release notes give each container's), or "
                  "Triton refuses to load the plan; rebuild the engine with the container's version otherwise.", ""]
    if gpu:
        lines += ["Without a GPU, load the CPU model alone: `tritonserver --model-repository=/models "
                  f"--model-control-mode=explicit --load-model={ONNX_CPU_MODEL}`.", ""]
    lines += [f"Not written: {why}" for why in repo.skipped]
    return "\n".join(lines).rstrip() + "\n"


def write_triton_repository(export_dir: str | Path, out: str | Path, overwrite: bool = False,
                            instances: int = 1) -> TritonRepository:
    """Write the model repository `out` from the export folder `export_dir`; see the module docstring."""
    export_dir, out = Path(export_dir), Path(out)
    folder = check_paths(export_dir, out, overwrite)
    engines = folder.engines()
    manifest = read_manifest(engines[0]) if engines else None
    # ONNX models batch without limit; they take the batch the export profiled its engine for
    onnx_batch = manifest.profiles[0].max[0] if manifest else DEFAULT_MAX_BATCH
    planned: list[tuple[TritonModel, tuple[int, int]]] = []
    skipped: list[str] = []
    if manifest is None:
        skipped.append(f"{TENSORRT_MODEL}: {export_dir} holds no engine (kanet_fp16.plan or kanet_fp32.plan)")
    elif manifest.tensorrt.flavour != "tensorrt":
        # Triton's tensorrt_plan backend links full TensorRT, which cannot deserialise a TensorRT-RTX engine
        skipped.append(f"{TENSORRT_MODEL}: {engines[0].name} was built with {manifest.tensorrt.flavour} "
                       f"{manifest.tensorrt.version}, which Triton's TensorRT backend cannot load; build the engine "
                       "with full TensorRT (pip install '.[tensorrt]' on a GPU machine, then kanet build)")
    else:
        profile = manifest.profiles[0]
        planned.append((TritonModel(TENSORRT_MODEL, "tensorrt_plan", "KIND_GPU", engines[0], profile.max[0],
                                    engine_frame_io(manifest, engines[0]), manifest.precision),
                        (_dims(profile.min[1], profile.max[1]), _dims(profile.min[2], profile.max[2]))))
    for name, kind, onnx_path in ((ONNX_GPU_MODEL, "KIND_GPU", folder.fp16_onnx),
                                  (ONNX_CPU_MODEL, "KIND_CPU", folder.fp32_onnx)):
        if onnx_path.is_file():
            model = onnx.load(str(onnx_path), load_external_data=False)  # once, for its I/O and its precision
            planned.append((TritonModel(name, "onnxruntime_onnx", kind, onnx_path, onnx_batch,
                                        onnx_frame_io(model, onnx_path), model_precision(model)), (-1, -1)))
        else:
            skipped.append(f"{name}: {export_dir} holds no {onnx_path.name}")

    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_NAMES:  # --overwrite: none of an earlier run's models survives
        shutil.rmtree(out / name, ignore_errors=True)
    for model, spatial in planned:
        version = out / model.name / "1"
        version.mkdir(parents=True)
        (out / model.name / "config.pbtxt").write_text(config_text(model, spatial, instances))
        target = version / ("model.plan" if model.platform == "tensorrt_plan" else "model.onnx")
        shutil.copyfile(model.source, target)
        if model.platform == "tensorrt_plan":
            shutil.copyfile(manifest_path(engines[0]), version / "model.json")  # read_manifest(model.plan) finds it
    models = [model for model, _ in planned]
    served_plan = any(model.platform == "tensorrt_plan" for model in models)
    repo = TritonRepository(out, models, skipped, manifest.tensorrt.version if served_plan else None)
    (out / "README.md").write_text(_readme(repo))
    return repo
