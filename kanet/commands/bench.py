"""`kanet bench`: latency, throughput, memory and FLOPs of every backend, with JSON, Markdown and a plot."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from export.cache import HELP as CACHE_HELP
from kanet.bundled import CLIP_PHOTO
from kanet.cli import UserError, number, path_option, size

from ._model import add_device_argument
from .run import next_run_folder

FRAME_SIZE = size("HxW", 33, "720x1280")  # KA-Net needs frames of at least 33 x 33

RESOLUTIONS = ((256, 256), (720, 1280), (1080, 1920))
QUICK_RESOLUTIONS = ((256, 256), (720, 1280))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.names import ALL

    parser.epilog = ("writes OUT/results.json (device, driver, library versions, git commit, every timing), "
                     "OUT/results.md and OUT/latency.png. Targets are evaluated and recorded, never enforced. "
                     "Compare two runs with: kanet bench --compare A.json B.json")
    what = parser.add_argument_group("what to run")
    what.add_argument("--checkpoint", type=path_option, metavar="CKPT",
                      help="checkpoint to time (default: a seeded random KA-Net; timings do not depend on the weights)")
    what.add_argument("--export-dir", type=path_option, metavar="DIR",
                      help="use DIR/kanet_fp32.onnx, kanet_fp16.onnx, kanet_fp16.plan from `kanet export` "
                           "(default: export into the cache, engine only when a GPU is present)")
    what.add_argument("--backends", metavar="LIST",
                      help=f"comma-separated subset of {','.join(ALL)} (default: all that run here; "
                           "torch-compile is left out on CPU, where it compiles for minutes per shape)")
    what.add_argument("--resolution", type=FRAME_SIZE, action="append", default=[], metavar="HxW",
                      help=f"frame size, repeatable (default {_sizes(RESOLUTIONS)}; "
                           f"--quick: {_sizes(QUICK_RESOLUTIONS)})")
    what.add_argument("--batch", action="append", type=number(int, 1), default=[], metavar="N",
                      help="batch size, repeatable (default 1 and 4 on a GPU, 1 on CPU); the best one is reported")
    add_device_argument(what, "where PyTorch and the exported models run")
    what.add_argument("--quick", action="store_true",
                      help="a small CPU-friendly run: 256x256 and one 720p point, few iterations, "
                           "video at 256x256, no profiling (a couple of minutes)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--warmup", type=number(int, 0), metavar="N",
                        help="untimed calls per backend after its first call and its (warm) memory-measuring call "
                             "(default 3 on a GPU, 1 on CPU; quick 0)")
    timing.add_argument("--iterations", type=number(int, 1), metavar="N",
                        help="timed rounds per shape at most (default 100 on a GPU, 30 on CPU; quick 10)")
    timing.add_argument("--min-iterations", type=number(int, 1), metavar="N",
                        help="timed rounds per shape at least, whatever the budget (default 3; quick 2)")
    timing.add_argument("--budget", type=number(float, above=0), metavar="SECONDS",
                        help="time for the timed rounds of one shape, all backends together; fewer rounds "
                             "when they would take longer (default 60; quick 15)")
    extra = parser.add_argument_group("end-to-end video and profiling")
    extra.add_argument("--video-size", type=FRAME_SIZE, metavar="HxW",
                       help="clip size for the `kanet run` figure (default: the largest resolution; quick 256x256)")
    extra.add_argument("--video-frames", type=number(int, 1), metavar="N",
                       help="clip length in frames (default 300 on a GPU, 10 on CPU; quick 30)")
    extra.add_argument("--no-video", action="store_true", help="skip the end-to-end video figure")
    extra.add_argument("--profile", choices=("missed", "all", "off"),
                       help="per-op-type profiles (ONNX Runtime profiler, torch.profiler) for the CPU targets: "
                            "the missed ones (default), every evaluated one, or none (default with --quick)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=path_option, metavar="DIR",
                     help="results folder (default: a new folder runs/bench/exp, exp2, ... as `kanet run` makes; "
                          "the device and date are inside results.json)")
    out.add_argument("--cache-dir", type=path_option, metavar="DIR",
                     help=f"{CACHE_HELP}; its bench/ keeps the exports made when --export-dir is not given")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument("--compare", type=path_option, nargs=2, metavar=("A.json", "B.json"),
                     help="print B/A ratios between two results files and exit")


def _sizes(sizes) -> str:
    return ", ".join(f"{h}x{w}" for h, w in sizes)


def _compare(paths: list[str]) -> int:
    from benchmarks.report import compare, load_results

    try:
        print(compare(*(load_results(Path(p)) for p in paths)))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return 0


def _config(args: argparse.Namespace, device):
    from benchmarks.harness import Settings, Shape
    from benchmarks.names import ALL
    from benchmarks.suite import BenchConfig

    gpu = device.type == "cuda"
    backends = None
    if args.backends:
        backends = tuple(name.strip() for name in args.backends.split(",") if name.strip())
        unknown = sorted(set(backends) - set(ALL))
        if unknown or not backends:
            raise UserError(f"--backends: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(ALL)}")
    for path, what in ((args.checkpoint, "--checkpoint"), (args.export_dir, "--export-dir")):
        if path and not Path(path).exists():
            raise UserError(f"{what} {path}: no such file or folder")

    quick = args.quick
    sizes = args.resolution or list(QUICK_RESOLUTIONS if quick else RESOLUTIONS)
    batches = args.batch or ([1, 4] if gpu and not quick else [1])
    shapes = [Shape(b, h, w) for h, w in sizes for b in batches]
    iterations = args.iterations or (10 if quick else 100 if gpu else 30)
    settings = Settings(
        warmup=args.warmup if args.warmup is not None else (0 if quick else 3 if gpu else 1),
        iterations=iterations,
        min_iterations=args.min_iterations or min(2 if quick else 3, iterations),
        budget_s=args.budget or (15.0 if quick else 60.0))
    if settings.min_iterations > settings.iterations:
        raise UserError(f"--min-iterations {settings.min_iterations} exceeds --iterations {settings.iterations}")
    video_size = None
    if not args.no_video:
        video_size = (args.video_size if args.video_size
                      else min(sizes, key=lambda s: s[0] * s[1]) if quick else max(sizes, key=lambda s: s[0] * s[1]))
        if video_size[0] % 2 or video_size[1] % 2:
            raise UserError(f"--video-size {video_size[0]}x{video_size[1]}: H.264 needs an even height and width")
    return BenchConfig(
        shapes=shapes, settings=settings, backends=backends, device=device,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        export_dir=Path(args.export_dir) if args.export_dir else None, cache_dir=args.cache_dir,
        video_size=video_size, video_frames=args.video_frames or (30 if quick else 300 if gpu else 10),
        clip_photo=CLIP_PHOTO,
        profile=args.profile or ("off" if quick else "missed"), progress=False if args.no_progress else None)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args.compare)
    from benchmarks import report
    from benchmarks.suite import run_suite
    from training.trainer import resolve_device

    config = _config(args, resolve_device(args.device))
    out = Path(args.out) if args.out else next_run_folder(Path("runs/bench"))
    if not args.out:
        print(f"kanet bench: writing to {out}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="kanet-bench-") as workdir:
        doc = run_suite(config, Path(workdir))
    out.mkdir(parents=True, exist_ok=True)
    table = report.markdown(doc)
    (out / "results.md").write_text(table)
    report.write_json(doc, out / "results.json")
    report.plot(doc, out / "latency.png")
    print(table)
    print(f"results written to {out}/results.json, results.md, latency.png")
    return 0
