"""`kanet demo [--out DIR]`: the project's checkpoint through every stage, with a report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.cache import HELP as CACHE_HELP
from kanet.cli import UserError, number, path_option

from ._model import add_model_arguments, openvino_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kanet.bundled import DEFAULT_CHECKPOINT, SAMPLES

    parser.epilog = ("Steps: export (FP32 + FP16 ONNX) and engine build (TensorRT on a GPU machine, TensorRT-RTX "
                     "ahead of time elsewhere), parity against PyTorch, dehazing of the sample photographs and a "
                     "generated clip with the fastest back-end present, quality next to the dark channel prior. "
                     "Writes OUT/summary.md, OUT/contact_sheet.png, OUT/images/, OUT/side_by_side/, "
                     "OUT/clip_dehazed.mp4, OUT/parity.json. A rerun reuses the export, engine and parity report.")
    parser.add_argument("--out", type=path_option, default="kanet-demo", metavar="DIR", help="output folder (default ./kanet-demo)")
    parser.add_argument("--checkpoint", type=path_option, default=str(DEFAULT_CHECKPOINT), metavar="CKPT",
                        help=f"checkpoint to demonstrate (default: the project's, {DEFAULT_CHECKPOINT.name})")
    parser.add_argument("--photos", type=path_option, default=str(SAMPLES), metavar="DIR",
                        help="hazy photographs to dehaze (default: the bundled samples)")
    parser.add_argument("--max-side", type=number(int, 1), metavar="PX",
                        help="shrink photographs to this long side first (default 480 on a CPU, full size on a GPU)")
    parser.add_argument("--clip-frames", type=number(int, 2), default=48, metavar="N", help="frames in the sample clip (default 48)")
    parser.add_argument("--cache-dir", type=path_option, metavar="DIR", help=f"{CACHE_HELP}; the engine is reused from it")
    add_model_arguments(parser, model=None)  # the demo exports its own model


def run(args: argparse.Namespace) -> int:
    from runtime.progress import progress

    from kanet.bundled import DEFAULT_CHECKPOINT
    from kanet.demo import DemoOptions, run_demo
    from runtime.devices import choose_device, parse_device

    device = parse_device(args.device)
    checkpoint, photos = Path(args.checkpoint), Path(args.photos)
    if not checkpoint.is_file() and checkpoint == DEFAULT_CHECKPOINT:
        raise UserError(f"{checkpoint}: the default checkpoint is not installed with the package (it comes with a "
                        "checkout of the repository, weights/: at 112 MB it is over PyPI's size limit); "
                        "pass --checkpoint PATH, an official KA-Net .pth or one of this project's")
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint (train one with `kanet train`, or pass --checkpoint)")
    if not photos.is_dir():
        raise UserError(f"{photos}: no such folder of photographs")
    choice = choose_device(device)  # after the checks: bad input is one line, no device note before it
    if choice.note:
        print(f"kanet demo: {choice.note}", file=sys.stderr)
    gpu = choice.gpus > 0
    opts = DemoOptions(out=Path(args.out), checkpoint=checkpoint, photos=photos,
                       max_side=args.max_side if args.max_side else (None if gpu else 480),
                       clip_frames=args.clip_frames, backend=args.backend, device=choice.device, half=args.half,
                       cuda_unusable=bool(choice.note), cache_dir=args.cache_dir,
                       openvino=openvino_options(args))
    with progress(None, desc="demo", unit="check") as bar:
        summary = run_demo(opts, bar)
    print(summary.read_text())
    print(f"demo written to {opts.out}/ (summary: {summary})")
    return 0
