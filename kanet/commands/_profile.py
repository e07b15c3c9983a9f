"""Engine-build flags shared by `kanet export` and `kanet build`."""
from __future__ import annotations

import argparse

from export.cache import HELP as CACHE_HELP
from kanet.cli import number, path_option, size


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine build")
    group.add_argument("--min", type=size(), default="1x256x256", metavar="NxHxW",
                       help="smallest batch x height x width (default 1x256x256)")
    group.add_argument("--opt", type=size(), default="1x720x1280", metavar="NxHxW",
                       help="shape tuned for (default 1x720x1280)")
    group.add_argument("--max", type=size(), default="4x1088x1920", metavar="NxHxW",
                       help="largest batch x height x width (default 4x1088x1920)")
    group.add_argument("--workspace", type=number(float, above=0), default=8.0, metavar="GiB",
                       help="builder workspace limit (default 8; the default --max needs more than 4)")
    group.add_argument("--opt-level", type=number(int, 0, at_most=5), default=3, metavar="0-5",
                       help="builder optimisation level (default 3)")
    group.add_argument("--compute-capability", action="append", default=[], metavar="SMxx",
                       help="TensorRT-RTX target (repeatable): SM75, SM80, SM86, SM89, SM120 or 'current'; "
                            "default: the current GPU, or all targets on a machine without one")
    group.add_argument("--cache-dir", type=path_option, metavar="DIR",
                       help=f"{CACHE_HELP}; engines built from the same ONNX, options and TensorRT are reused "
                            "from its engines/")


def build_options(args: argparse.Namespace):
    from export.engine import BuildOptions, Profile

    profile = Profile(args.min, args.opt, args.max)
    profile.validate()
    return BuildOptions(profile, args.workspace, args.opt_level, tuple(args.compute_capability))
