"""`kanet doctor [--json FILE]`: driver, GPUs, CUDA, TensorRT flavours, ONNX Runtime and the back-end chosen."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from kanet.cli import UserError, path_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("exits 0 when the best path here works (also on a machine without a GPU), 1 when a GPU is "
                     "present but unusable, with the reason and the fix")
    parser.add_argument("--json", type=path_option, metavar="FILE", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from kanet.doctor import diagnose, table

    report = diagnose()
    print(table(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(asdict(report), indent=2))
        except OSError as exc:
            raise UserError(f"--json {args.json}: cannot write the report ({exc.strerror or exc})") from None
    return report.exit_code
