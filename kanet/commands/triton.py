"""`kanet triton EXPORT_DIR --out REPO`: a Triton Inference Server model repository from an export folder."""
from __future__ import annotations

import argparse

from kanet.cli import number, path_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("writes REPO/kanet_tensorrt (the engine, when built with full TensorRT; its manifest as "
                     "1/model.json), REPO/kanet_onnx_gpu (FP16 ONNX, CUDA execution provider), REPO/kanet_onnx_cpu "
                     "(FP32 ONNX, CPU) and REPO/README.md with the command that starts Triton's container on it")
    parser.add_argument("export_dir", type=path_option, metavar="EXPORT_DIR", help="a `kanet export` folder")
    parser.add_argument("--out", type=path_option, required=True, metavar="REPO",
                        help="the model repository folder to write (outside EXPORT_DIR)")
    parser.add_argument("--instances", type=number(int, 1), default=1,
                        help="instances of each model per GPU (or on the CPU) that Triton runs (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a REPO that is not empty, replacing the models and README.md kanet writes")


def run(args: argparse.Namespace) -> int:
    from export.triton_repo import write_triton_repository

    repo = write_triton_repository(args.export_dir, args.out, overwrite=args.overwrite, instances=args.instances)
    print(f"wrote the Triton model repository {repo.path}/")
    for model in repo.models:
        print(f"  {model.name:16s} {model.platform:16s} {model.kind:8s} {model.source.name} "
              f"(max batch {model.max_batch_size})")
    for why in repo.skipped:
        print(f"  not written: {why}")
    print(f"start Triton on it as {repo.path}/README.md says")
    return 0
