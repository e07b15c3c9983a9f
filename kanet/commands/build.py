"""`kanet build MODEL.onnx --out DIR`: an engine and its manifest from an exported ONNX."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from kanet.cli import UserError, path_option

from ._profile import add_build_arguments, build_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", type=path_option, help="an ONNX file written by `kanet export` (FP16 for an FP16 engine)")
    parser.add_argument("--out", type=path_option, required=True, metavar="DIR", help="output folder for the .plan and its .json manifest")
    add_build_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from export.pipeline import engine_from_onnx

    onnx_path = Path(args.onnx)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    export_info = onnx_path.parent / "export.json"
    fp32_nodes = sorted(json.loads(export_info.read_text())["fp32_nodes"]) if export_info.is_file() else []
    precision = "fp16" if "fp16" in onnx_path.stem else "fp32"
    build = engine_from_onnx(onnx_path, Path(args.out), build_options(args), args.cache_dir, precision,
                                fp32_nodes if precision == "fp16" else [])
    how = "reused from cache" if build.reused_from_cache else f"built in {build.manifest.build_seconds} s"
    print(f"engine {build.manifest.engine.path} ({how})")
    return 0
