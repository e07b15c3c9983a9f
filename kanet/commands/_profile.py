"""Engine-build flags shared by `kanet export` and `kanet build`."""
from __future__ import annotations

import argparse

from export.cache import HELP as CACHE_HELP
from export.engine import RTX_TARGETS, BuildOptions, Profile
from kanet.cli import number, path_option, size

DEFAULTS = BuildOptions()


def _shape(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine build")
    profile = DEFAULTS.profile
    group.add_argument("--min", type=size(), default=profile.min, metavar="NxHxW",
                       help=f"smallest batch x height x width (default {_shape(profile.min)})")
    group.add_argument("--opt", type=size(), default=profile.opt, metavar="NxHxW",
                       help=f"shape tuned for (default {_shape(profile.opt)})")
    group.add_argument("--max", type=size(), default=profile.max, metavar="NxHxW",
                       help=f"largest batch x height x width (default {_shape(profile.max)})")
    group.add_argument("--workspace", type=number(float, above=0), default=DEFAULTS.workspace_gib, metavar="GiB",
                       help=f"builder workspace limit (default {DEFAULTS.workspace_gib:g}; the default --max needs "
                            "more than 4)")
    group.add_argument("--opt-level", type=number(int, 0, at_most=5), default=DEFAULTS.optimization_level,
                       metavar="0-5", help=f"builder optimisation level (default {DEFAULTS.optimization_level})")
    group.add_argument("--compute-capability", action="append", default=[], metavar="SMxx",
                       help=f"TensorRT-RTX target (repeatable): {', '.join(RTX_TARGETS)} or 'current'; "
                            "default: the current GPU, or all targets on a machine without one")
    group.add_argument("--cache-dir", type=path_option, metavar="DIR",
                       help=f"{CACHE_HELP}; engines built from the same ONNX, options and TensorRT are reused "
                            "from its engines/")


def build_options(args: argparse.Namespace) -> BuildOptions:
    profile = Profile(args.min, args.opt, args.max)
    profile.validate()
    return BuildOptions(profile, args.workspace, args.opt_level, tuple(args.compute_capability))
