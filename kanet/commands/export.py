"""`kanet export CHECKPOINT --out DIR`: FP32 ONNX, FP16 ONNX, engine and manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from kanet.cli import number, path_option
from runtime.manifest import manifest_path

from ._profile import add_build_arguments, build_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("writes DIR/kanet_fp32.onnx and DIR/kanet_fp16.onnx (ONNX Runtime), DIR/kanet_fp16_tensorrt.onnx "
                     "(the engine source; kanet_fp32_tensorrt.onnx too for an FP32 engine), DIR/kanet_<precision>.plan "
                     "with its manifest DIR/kanet_<precision>.json, and DIR/export.json (FP32-kept nodes, attention "
                     "forms, and why). "
                     "Build an engine alone from an ONNX with `kanet build`.")
    parser.add_argument("checkpoint", type=path_option, help="official KA-Net checkpoint, one of ours, or a bare state_dict")
    parser.add_argument("--out", type=path_option, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--io", choices=("frames", "tensor"), default="frames",
                        help="frames: uint8 NxHxWx3 BGR in and out, all processing in the graph (default); "
                             "tensor: float32 NCHW RGB [-1, 1] in, [0, 1] out")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="engine precision (default fp16)")
    parser.add_argument("--opset", type=number(int, 1), default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--no-engine", action="store_true",
                        help="stop after the ONNX files (the engine build flags are then not read)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    add_build_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from export.pipeline import export_checkpoint

    # The engine-build flags are read only when an engine is built: --no-engine ignores them.
    engine = {} if args.no_engine else {"options": build_options(args)}
    summary = export_checkpoint(args.checkpoint, args.out, io=args.io, precision=args.precision,
                                opset=args.opset, cache_dir=args.cache_dir, engine=not args.no_engine,
                                simplify=not args.no_simplify, **engine)
    print(describe_export(summary, Path(args.out)))
    return 0


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def describe_export(summary: dict, out: Path) -> str:
    """A few lines for a person: each file with its size and role; the details stay in export.json."""
    from export.pipeline import EngineBuild
    fused, native = summary["onnx_fp32"]["attention"], summary["onnx_fp16_tensorrt"]["attention"]
    rows = [(Path(summary["onnx_fp32"]["path"]), "FP32 ONNX for ONNX Runtime (CPU)"),
            (Path(summary["onnx_fp16"]["path"]), "FP16 ONNX for ONNX Runtime (CUDA provider)"),
            (Path(summary["onnx_fp16_tensorrt"]["path"]),
             f"FP16 ONNX, engine source, {len(summary['fp32_nodes'])} nodes kept FP32")]
    if "onnx_fp32_tensorrt" in summary:
        rows.append((Path(summary["onnx_fp32_tensorrt"]["path"]), "FP32 ONNX, engine source"))
    if "engine" in summary:
        build = EngineBuild.from_json(summary["engine"])
        engine = build.manifest
        how = "reused from cache" if build.reused_from_cache else f"built in {engine.build_seconds:.0f} s"
        rows += [(Path(engine.engine.path), f"{engine.tensorrt.flavour} {engine.tensorrt.version} "
                  f"engine, {how}; targets {','.join(engine.targets)}"),
                 (manifest_path(engine.engine.path), "engine manifest")]
    rows.append((out / "export.json", "all of the above in full, with each FP32-kept node and why"))
    width = max(len(path.name) for path, _ in rows)
    lines = [f"exported {summary['checkpoint']['path']} to {out}/"]
    lines += [f"  {path.name:{width}s}  {_size(path):>10s}  {what}" for path, what in rows]
    lines.append(f"attention: {fused['multihead_attention']} MultiHeadAttention nodes per ONNX Runtime model; FP16 engine "
                 f"source: {native['onnx_attention']} Attention nodes (TensorRT's attention layer, where a probe engine "
                 f"built), {native['q_scaled_chains']} Q-scaled MatMul -> Softmax -> MatMul chains")
    return "\n".join(lines)
