"""`kanet eval --hazy DIR [--clear DIR] [--model M]`: score KA-Net next to the dark channel prior."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kanet.cli import UserError, number, path_option

from ._model import MODEL_HELP, add_model_arguments, openvino_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Methods scored on the same frames: the hazy input itself, the dark channel prior "
                     "(He et al.), KA-Net (--model) and any --pred folders. With --clear: PSNR/SSIM too. "
                     "Writes OUT/eval.json and OUT/eval.md (and OUT/<method>/ images with --save-images).")
    parser.add_argument("--hazy", type=path_option, required=True, metavar="DIR", help="folder of hazy images")
    parser.add_argument("--clear", type=path_option, metavar="DIR",
                        help="clear references, matched by name (0001_0.8_0.2.jpg -> 0001.png works)")
    add_model_arguments(parser, f"KA-Net to score: {MODEL_HELP}", required=False)
    parser.add_argument("--pred", action="append", default=[], metavar="NAME=DIR",
                        help="outputs of another method, matched by name (repeatable)")
    parser.add_argument("--no-dcp", action="store_true", help="leave out the dark channel prior baseline")
    parser.add_argument("--max-side", type=number(int, 1), metavar="PX",
                        help="shrink images so the long side is at most PX before scoring (default: full size)")
    parser.add_argument("--out", type=path_option, default="eval", metavar="DIR", help="report folder (default ./eval)")
    parser.add_argument("--title", default="Dehazing quality", help="heading of the Markdown report")
    parser.add_argument("--save-images", action="store_true", help="write every method's outputs")


def build_methods(args: argparse.Namespace) -> dict:
    from evaluation.dcp import dehaze_dcp
    from evaluation.evaluate import folder_method
    from runtime.devices import parse_device

    device = parse_device(args.device)

    methods = {"hazy input": lambda frame, name: frame}
    if not args.no_dcp:
        methods["dark channel prior"] = lambda frame, name: dehaze_dcp(frame)
    if args.model:
        from runtime import Dehazer

        dehazer = Dehazer.load(args.model, backend=args.backend, device=device, half=args.half,
                               openvino=openvino_options(args))  # a DehazeError names the file
        if dehazer.chosen:
            print(f"kanet eval: --backend auto: {dehazer.chosen}", file=sys.stderr)
        methods["KA-Net"] = lambda frame, name: dehazer(frame)
    for spec in args.pred:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            raise UserError(f"--pred {spec}: expected NAME=DIR with an existing folder")
        methods[name] = folder_method(Path(folder))
    return methods


def run(args: argparse.Namespace) -> int:
    from runtime.progress import progress

    from evaluation.evaluate import evaluate, list_images, markdown_table

    out = Path(args.out)
    methods = build_methods(args)
    count = len(list_images(Path(args.hazy)))
    with progress(count, desc="eval", unit="image") as bar:
        report = evaluate(Path(args.hazy), methods, Path(args.clear) if args.clear else None,
                          out if args.save_images else None, args.max_side, progress=bar.update)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report.to_json(), indent=2))
    table = markdown_table(report, args.title)
    (out / "eval.md").write_text(table)
    print(table)
    print(f"report written to {out / 'eval.json'} and {out / 'eval.md'}")
    if not report.images:
        print(f"kanet eval: no image could be scored: {report.why_none_scored()}", file=sys.stderr)
        return 1
    return 0
