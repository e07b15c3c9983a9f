"""`kanet export`: checkpoint -> FP32 ONNX -> FP16 ONNX -> engine + manifest, with an engine cache."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import onnx

from runtime.artifacts import ExportFolder
from runtime.manifest import EngineManifest, read_manifest, sha256_file
from training import CheckpointError, load_checkpoint
from training.models.layers import attention_shapes

from .attention_probe import AttentionForm, attention_forms, forms_metadata, native_shapes
from .cache import engines_dir, user_cache_dir
from .engine import BuildOptions, build_engine, cached_engine
from .errors import ExportError
from .fp16 import convert_fp16
from .onnx_attention import attention_report, recorded_attention_forms
from .onnx_export import ATTENTION_OPSET, DEFAULT_OPSET, export_onnx


@dataclass
class EngineBuild:
    """An engine in an export folder, and whether it came from the user cache instead of a build."""
    manifest: EngineManifest
    reused_from_cache: bool

    def to_json(self) -> dict:
        return {**self.manifest.to_json(), "reused_from_cache": self.reused_from_cache}

    @classmethod
    def from_json(cls, doc: dict) -> EngineBuild:
        return cls(EngineManifest.from_json(doc), bool(doc.get("reused_from_cache")))


def _engine_source_forms(onnx_path: Path) -> list[dict]:
    """The attention forms an engine source's exporter recorded (read once, before the build, and let go);
    ExportError for ONNX Runtime's MultiHeadAttention form, which TensorRT cannot parse."""
    graph = onnx.load(str(onnx_path), load_external_data=False)
    if attention_report(graph)["multihead_attention"]:
        raise ExportError(f"{onnx_path}: holds com.microsoft.MultiHeadAttention, the ONNX Runtime form, which "
                          "TensorRT cannot parse; build from kanet_fp16_tensorrt.onnx, or from kanet_fp32_tensorrt.onnx "
                          "(written by `kanet export --precision fp32`)")
    return recorded_attention_forms(graph)


def engine_from_onnx(onnx_path: Path, out_dir: Path, options: BuildOptions, cache_dir: str | Path | None,
                     precision: str, fp32_nodes: list[str], checkpoint_sha256: str | None = None) -> EngineBuild:
    """The engine for onnx_path in out_dir: reused from the cache folder's engines/ (cache_dir None: the
    user's, export.cache) when inputs and options match."""
    options.profile.validate()
    forms = _engine_source_forms(onnx_path)
    target = ExportFolder(out_dir).engine(precision)
    engines = engines_dir(user_cache_dir(cache_dir))
    hit, key = cached_engine(engines, onnx_path, options)
    reused = hit is not None
    if hit is None:
        hit = engines / f"kanet_{precision}_{key[:16]}.plan"
        build_engine(onnx_path, hit, options, precision, fp32_nodes, checkpoint_sha256,
                     attention_forms=forms)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(hit, target)
    manifest = read_manifest(hit)
    manifest.engine = replace(manifest.engine, path=str(target), cached_copy=str(hit))
    manifest.write(target)
    return EngineBuild(manifest, reused)


def _engine_source(model, path: Path, forms: list[AttentionForm], io: str, opset: int, simplify: bool) -> dict:
    """The FP32 graph an engine (or the FP16 engine source) is made from, attention written as `forms` say."""
    native = native_shapes(forms)
    summary = export_onnx(model, path, io=io, opset=max(opset, ATTENTION_OPSET) if native else opset,
                          simplify=simplify, attention="tensorrt", native_attention=native,
                          metadata=forms_metadata(forms))
    return {**summary, "attention_forms": [asdict(f) for f in forms]}


def _fp16_summary(converted: dict, unconverted: dict) -> dict:
    """What convert_fp16 did, with the attention counted before conversion (the Casts around FP32-kept
    Softmaxes would hide the chains)."""
    summary = {k: v for k, v in converted.items() if k != "fp32_nodes"}
    summary["attention"] = unconverted["attention"]
    if "attention_forms" in unconverted:
        summary["attention_forms"] = unconverted["attention_forms"]
    return summary


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, io: str = "frames", precision: str = "fp16",
                      opset: int = DEFAULT_OPSET, options: BuildOptions = BuildOptions(),
                      cache_dir: str | Path | None = None, engine: bool = True, simplify: bool = True) -> dict:
    if precision not in ("fp16", "fp32"):
        raise ExportError(f"--precision must be fp16 or fp32, got {precision!r}")
    out_dir = Path(out_dir)
    if engine:
        options.profile.validate()
    try:
        model = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = ExportFolder(out_dir)
    summary = {"checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)}}
    # ONNX Runtime's models (FP32 for the CPU, FP16 for its CUDA provider) carry fused MultiHeadAttention;
    # the engine sources what this TensorRT builds natively (an opset-23 Attention node where a probe engine
    # built, the Q-scaled chain it fuses elsewhere): it cannot parse com.microsoft ops.
    summary["onnx_fp32"] = export_onnx(model, folder.fp32_onnx, io=io, opset=opset, simplify=simplify)
    summary["onnx_fp16"] = _fp16_summary(convert_fp16(folder.fp32_onnx, folder.fp16_onnx), summary["onnx_fp32"])
    shapes, probes = attention_shapes(model), user_cache_dir(cache_dir)
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        unconverted = Path(scratch) / "engine_source_fp32.onnx"
        written = _engine_source(model, unconverted, attention_forms(shapes, "fp16", options, probes), io, opset,
                                 simplify)
        source_fp16 = convert_fp16(unconverted, folder.engine_source("fp16"))
    summary["onnx_fp16_tensorrt"] = _fp16_summary(source_fp16, written)
    summary["fp32_nodes"] = source_fp16["fp32_nodes"]  # the FP16 engine's kept islands, cited by its manifest
    if engine and precision == "fp32":
        summary["onnx_fp32_tensorrt"] = _engine_source(model, folder.engine_source("fp32"),
                                                       attention_forms(shapes, "fp32", options, probes), io, opset,
                                                       simplify)
    if engine:
        kept = sorted(source_fp16["fp32_nodes"]) if precision == "fp16" else []
        summary["engine"] = engine_from_onnx(folder.engine_source(precision), out_dir, options, cache_dir, precision,
                                             kept, summary["checkpoint"]["sha256"]).to_json()
    folder.record.write_text(json.dumps(summary, indent=2))
    return summary
