"""`kanet`: one command with a subcommand per stage.

Each subcommand lives in its own module and is imported only when run, so
`kanet run` never pulls in torch.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.metadata
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from runtime.errors import KanetError

# name -> (module defining `add_arguments(parser)` and `run(args) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("kanet.commands.info", "describe a checkpoint (format, precision, layout check, RFF, training metadata) and this machine (versions, providers, GPUs)"),
    "export": ("kanet.commands.export", "checkpoint -> FP32 ONNX -> FP16 ONNX -> TensorRT/TensorRT-RTX engine + manifest"),
    "build": ("kanet.commands.build", "build an engine (and manifest) from an exported ONNX file"),
    "parity": ("kanet.commands.parity", "compare exported models with PyTorch FP32 on random and real frames"),
    "run": ("kanet.commands.run", "dehaze images, videos, cameras and streams with an engine or ONNX model (no torch)"),
    "synth": ("kanet.commands.synth", "write a synthetic hazy/clear paired set (multi-degradation haze) with a contact sheet"),
    "train": ("kanet.commands.train", "train or fine-tune KA-Net (haze synthesis, contrastive loss, reweighting); resumable"),
    "eval": ("kanet.commands.eval", "score dehazing quality (PSNR/SSIM, haze density, contrast, colour) next to the dark channel prior"),
    "bench": ("kanet.commands.bench", "latency, throughput, memory and FLOPs of every backend side by side; JSON, Markdown, plot"),
    "demo": ("kanet.commands.demo", "the whole job on the project's checkpoint: export, engine, parity, dehaze photos and a clip, report"),
    "triton": ("kanet.commands.triton", "a Triton Inference Server model repository (TensorRT plan, ONNX Runtime GPU and CPU models) from an export folder"),
    "doctor": ("kanet.commands.doctor", "what this machine can run: driver, GPUs, CUDA, TensorRT flavours, ONNX Runtime, the back-end chosen"),
}


class UserError(KanetError):
    """An error caused by the user's input: printed as one message, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but a parse error is one line, `kanet CMD: error: ...`, and a pointer to --help (exit 2): the
    usage block argparse prints first buries the message (a subcommand's runs to a dozen lines). The
    subcommands' parsers are of this class too (add_subparsers makes them of the parent's); --help is argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\nsee `{self.prog} --help`\n")


def number(kind: type = int, at_least: float | None = None, above: float | None = None,
           at_most: float | None = None):
    """The argparse type of every numeric option: a finite `kind` within the bounds given. Anything else
    (nan, inf, out of range) is refused while parsing: `kanet CMD: error: argument --NAME: expected ...`, exit 2."""
    bounds = [f"{sign} {limit:g}" for sign, limit in ((">=", at_least), (">", above), ("<=", at_most))
              if limit is not None]
    wanted = " ".join(["an integer" if kind is int else "a finite number", " and ".join(bounds)]).strip()

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (at_least is None or value >= at_least) and (above is None or value > above)
                and (at_most is None or value <= at_most)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


def size(form: str = "NxHxW", at_least: int = 1, example: str = "1x720x1280"):
    """The argparse type of every size option: `form` ('NxHxW', 'HxW') in integers >= `at_least`, parsed to a
    tuple; anything else is refused while parsing, naming the option: `kanet CMD: error: argument --NAME: ...`."""
    dims = form.count("x") + 1
    wanted = f"{form} with every number >= {at_least}, e.g. {example}"

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.lower().split("x"))
        except ValueError:
            values = ()
        if len(values) != dims or min(values) < at_least:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return values

    return parse


def path_option(text: str) -> str:
    """The argparse type of every path option: a path below something that is not a folder
    (`notes.txt/out.mp4`) can be neither read nor written, so it is refused while parsing, before any work,
    naming the option and the file: `kanet CMD: error: argument --NAME: ...`, exit 2."""
    for parent in reversed(Path(text).parents):  # outermost first: name the file that is in the way
        if parent.exists() and not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} lies below {str(parent)!r}, which is a file, not a folder")
    return text


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), read without importing torch."""
    try:
        return importlib.metadata.version("kanet")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never `pip install`ed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kanet",
        description="KA-Net dehazing: PyTorch checkpoint -> ONNX -> FP16 TensorRT engine -> video.",
    )
    parser.add_argument("--version", action="version", version=f"kanet {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module, _parser=sub_parser)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, with a suggestion for a mistyped subcommand (argparse only lists the choices) and
    unrecognized arguments reported by the subcommand's parser (argparse leaves them to the top-level
    one, whose error would name `kanet`, not the subcommand, and point at the wrong --help)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # top-level options take no values
    if command is not None and command not in SUBCOMMANDS:
        close = difflib.get_close_matches(command, SUBCOMMANDS, n=1)
        parser.error(f"unknown command {command!r}; " +
                     (f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(SUBCOMMANDS)}"))
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "_parser", parser).error(unrecognized(extra))
    return args


def unrecognized(extra: list[str]) -> str:
    """The message for leftover arguments; existing files among them mostly mean the shell expanded an
    unquoted glob (`--source *.jpg`), so say so and show the quoted pattern."""
    shown = " ".join(extra[:5]) + (f" ... ({len(extra)} in all)" if len(extra) > 5 else "")
    # a file right after an unknown option is that option's value (`--modle m.onnx`), not a glob's
    files = [a for i, a in enumerate(extra)
             if not a.startswith("-") and os.path.exists(a) and not (i and extra[i - 1].startswith("-"))]
    if not files:
        return f"unrecognized arguments: {shown}"
    parents, suffixes = {str(Path(f).parent) for f in files}, {Path(f).suffix for f in files}
    pattern = (str(Path(parents.pop()) / f"*{suffixes.pop()}") if len(parents) == len(suffixes) == 1
               else "photos/*.jpg")
    return (f"unrecognized arguments: {shown}; {len(files)} of them are existing files: did the shell expand an "
            f"unquoted wildcard? Quote the pattern, e.g. '{pattern}'")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KanetError as exc:
        print(f"kanet {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"kanet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line here, the traceback in a log file
        log = _write_crash_log(args.command)
        name = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        print(f"kanet {args.command}: internal error ({name[:300]}); please report it with the traceback in {log}",
              file=sys.stderr)
        return 1


def _write_crash_log(command: str) -> Path:
    folder = Path(tempfile.gettempdir()) / "kanet-crash"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{id(sys.exc_info()[1]):x}.log"
    log.write_text(f"kanet {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return log

