"""`kanet run --model M --source S --output O`: dehaze images, videos, cameras and streams."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from kanet.cli import number, path_option, size
from runtime.errors import KanetError
from runtime.summary import RunSummary

from ._model import add_model_arguments, openvino_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Every frame read is accounted for: written, or counted undecodable. Exit status 0 when every "
                     "source was processed, 1 when one failed, a stream was dropped after its retries, an output "
                     "could not be written (disk full) or a source's audio could not be copied (the video is "
                     "kept without it; the summary says why), 2 on bad input, 130 after Ctrl-C, which stops reading and "
                     "finishes the frames in flight (as does q in the window), so outputs are complete and the "
                     "summary is written; a second Ctrl-C aborts, leaving a video being written as NAME.partial.EXT.")
    add_model_arguments(parser)
    parser.add_argument("--source", type=path_option, required=True, action="append", metavar="S",
                        help="image file, folder or quoted glob of images/videos, video file, camera index (0), "
                             "rtsp:// or http(s):// URL, or a .txt list of sources (one per line); repeatable, "
                             "sources run concurrently")
    parser.add_argument("--output", type=path_option, metavar="O",
                        help="folder (PNG per frame; a subfolder per source when several), video file "
                             ".mp4/.mkv/.mov/.avi/.webm/.ts (audio copied from a source video; NAME-LABEL.ext per "
                             "source when several), an image file for one input image, or - for raw bgr24 frames "
                             "on stdout; other extensions are an error; default: a new folder runs/dehaze/exp, "
                             "exp2, ...")
    parser.add_argument("--lossless", action="store_true",
                        help="video outputs keep the dehazed yuv420p frames exactly (H.264 qp 0 in .mp4/.mkv/.mov/"
                             ".m4v/.ts, VP9 lossless in .webm; files several times larger): what a --cluster run "
                             "that splits a long video needs to give frames identical to a single-process run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist already (a source is never replaced)")
    parser.add_argument("--summary", type=path_option, metavar="FILE.json",
                        help="write the run's summary: frames in/out, undecodable, fps, latency percentiles, "
                             "per-source counts, retried/dropped streams")
    parser.add_argument("--no-verify-engine", action="store_true",
                        help="load an engine without checking its sha256 against its manifest (saves reading "
                             "the file once more at start)")
    parser.add_argument("--batch", type=number(int, 1), default=1,
                        help="frames per inference call, gathered across sources of the same frame size (default 1)")
    parser.add_argument("--tile", type=parse_tile, default="auto", metavar="auto|off|N|HxW",
                        help="frames larger than this are dehazed in overlapping tiles; auto: only frames larger "
                             "than the engine profile, in tiles of its maximum size (default); off: such frames "
                             "are an error")
    parser.add_argument("--tile-overlap", type=number(int, 0), default=32, metavar="PX",
                        help="minimum overlap of adjacent tiles, blended linearly (default 32)")
    parser.add_argument("--max-side", type=number(int, 1), metavar="PX",
                        help="dehaze frames whose long side exceeds PX at that size, and enlarge the result back "
                             "to the frame's size: a quality/speed trade (faster and lighter, with less fine "
                             "detail; default: full size); frames larger than the back-end handles comfortably "
                             "get one warning with the expected time and memory and the PX that fits")
    parser.add_argument("--side-by-side", action="store_true", help="write input and dehazed frame next to each other")
    parser.add_argument("--show", action="store_true", help="show a live window (needs a display); q or Esc stops")
    parser.add_argument("--fps", type=number(float, above=0), help="frame rate of a video output when the source has none "
                                                  "(image sequences; default 25)")
    parser.add_argument("--max-frames", type=number(int, 1), metavar="N", help="stop each source after N frames")
    parser.add_argument("--cluster", type=cluster_address, metavar="local|auto|ray://HOST:PORT",
                        help="spread the sources over a Ray cluster, one worker per GPU (or per 4 CPU cores on "
                             "CPU-only nodes), each running this pipeline where the sources lie (shared storage, "
                             "URLs, cameras of the machine kanet runs on); outputs and names as without it. local: "
                             "start a cluster on this machine for the run; auto: join the one `ray start` made here; "
                             "ray://HOST:PORT: join that head node (Ray Client). A worker that dies has its work "
                             "redone on another")
    parser.add_argument("--workers", type=number(int, 1), metavar="N",
                        help="--cluster: start N workers, spread over the nodes by their GPUs (CPUs on CPU-only "
                             "clusters), instead of one per GPU or per 4 CPU cores")
    parser.add_argument("--retries", type=number(int, 0), default=5,
                        help="reconnects of a dropped or stalled stream/camera before it counts as dropped (default 5); "
                             "one that never opened gets one quick retry instead")
    parser.add_argument("--retry-delay", type=number(float, 0), default=1.0, metavar="S",
                        help="first reconnect delay in seconds, doubled per failure up to 30 (default 1)")
    parser.add_argument("--timeout", type=number(float, above=0), default=10.0, metavar="S",
                        help="seconds without data before a stream counts as stalled (default 10)")


def next_run_folder(base: Path = Path("runs/dehaze")) -> Path:
    """runs/dehaze/exp, then exp2, exp3, ...: a default output never lands on an earlier run's."""
    n = 1
    while (base / (f"exp{n}" if n > 1 else "exp")).exists():
        n += 1
    return base / (f"exp{n}" if n > 1 else "exp")


def cluster_address(text: str) -> str:
    """The argparse type of --cluster: local, auto or ray://HOST:PORT."""
    from runtime.cluster import check_address

    try:
        return check_address(text)
    except KanetError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def parse_tile(text: str):
    """The argparse type of --tile: 'auto' -> None, 'off' -> 0, '512' -> 512, '540x960' -> (540, 960)."""
    text = text.lower()
    if text == "auto":
        return None
    if text in ("off", "0"):
        return 0
    try:
        return size("HxW")(text) if "x" in text else size("N")(text)[0]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, off, N or HxW (numbers >= 1), got {text!r}") from None


def _print_summary(summary: RunSummary) -> None:
    latency = summary.latency_ms or {}
    print(f"{summary.frames_out} of {summary.frames_in} frames written, {summary.undecodable} undecodable; "
          f"{summary.fps:.2f} fps; latency p50 {latency.get('p50', '-')} / p90 {latency.get('p90', '-')} / "
          f"p99 {latency.get('p99', '-')} ms; {summary.backend} {summary.precision}", file=sys.stderr)
    for worker in summary.workers:  # a --cluster run: who did what, and what starting each cost
        print(f"  {worker.worker} on {worker.node} ({worker.resources}): {worker.frames_out} frames in {worker.parts} "
              f"part(s), {worker.fps:.2f} fps; started in {worker.start_seconds:.1f} s "
              f"(model {worker.load_seconds:.1f} s){'; died' if worker.died else ''}", file=sys.stderr)
    for source in summary.sources:
        if source.status != "ok" or source.retries or source.undecodable:
            errors = f"; last error: {source.errors[-1]}" if source.errors else ""
            print(f"  {source.label}: {source.status}, {source.frames_out} written, "
                  f"{source.undecodable} undecodable, {source.retries} retries{errors}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from runtime import Dehazer
    from runtime.devices import parse_device
    from runtime.pipeline import Pipeline
    from runtime.sinks import Window, check_outputs, sinks_for
    from runtime.sources import open_sources

    logging.basicConfig(format="kanet run: %(message)s")
    device = parse_device(args.device)
    _check_cluster_flags(args, device)
    if not args.output and not args.show:
        args.output = str(next_run_folder())
        print(f"kanet run: writing to {args.output}", file=sys.stderr)
    pipeline = None
    try:
        sources = open_sources(args.source, args.retries, args.retry_delay, args.timeout)
        sinks = sinks_for(args.output, sources, args.fps, args.lossless) if args.output else [None] * len(sources)
        check_outputs([s for s in sinks if s is not None], sources, args.overwrite)
        if args.cluster:
            pipeline = _cluster_run(args, device, sources, sinks)
            summary = pipeline.run()
        else:
            window = Window() if args.show else None
            with Dehazer.load(args.model, args.backend, device, args.tile, args.tile_overlap, args.half,
                              args.max_side, verify=not args.no_verify_engine,
                              openvino=openvino_options(args)) as dehazer:
                if dehazer.chosen:
                    print(f"kanet run: --backend auto: {dehazer.chosen}", file=sys.stderr)
                pipeline = Pipeline(dehazer, sources, sinks, batch=args.batch, side_by_side=args.side_by_side,
                                    window=window, max_frames=args.max_frames)
                summary = pipeline.run()
    except BaseException as exc:  # the summary is written on every way out, Ctrl-C included
        with contextlib.suppress(KanetError):  # an unwritable summary must not hide why the run ended
            _save_summary(args, pipeline.summary if pipeline else None, exc)
        raise
    summary = _save_summary(args, summary, None)
    _print_summary(summary)
    return {"ok": 0, "interrupted": 130}.get(summary.status, 1)


def _check_cluster_flags(args: argparse.Namespace, device: str) -> None:
    """What a cluster run cannot do, refused before any work starts."""
    if args.cluster and device not in ("auto", "cpu", "cuda:0"):
        raise KanetError(f"--device {args.device} picks a GPU of this machine; with --cluster each worker takes the "
                         "GPU Ray gives it: use --device auto (or cpu)")
    if args.workers and not args.cluster:
        raise KanetError(f"--workers {args.workers} needs --cluster (local, auto or ray://HOST:PORT)")
    if args.cluster and args.show:
        raise KanetError("--show needs the frames on this machine; with --cluster they stay on the workers: "
                         "write to --output")
    if args.cluster and args.output == "-":
        raise KanetError("--output - (raw frames on stdout) needs the frames on this machine; with --cluster "
                         "they stay on the workers: write to a file or folder")


def _cluster_run(args: argparse.Namespace, device: str, sources, sinks):
    from runtime.cluster import ClusterRun
    from runtime.cluster_worker import ModelSpec, PipelineOptions

    model = ModelSpec(str(args.model), args.backend, device, args.tile, args.tile_overlap, args.half,
                      args.max_side, not args.no_verify_engine, openvino_options(args))
    return ClusterRun(args.cluster, model, sources, sinks,
                      PipelineOptions(args.batch, args.side_by_side, args.max_frames, os.getcwd()), args.workers)


def _save_summary(args: argparse.Namespace, summary: RunSummary | None, exc: BaseException | None) -> RunSummary:
    """The run's summary with how it ended (RunSummary.finish), written to --summary when given; a run that
    stopped before any frame flowed gets the status alone."""
    from runtime.atomic import write_bytes

    summary = summary or RunSummary()
    summary.finish(str(args.model), args.output, exc)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(args.summary, json.dumps(summary.to_json(), indent=2).encode())
    return summary
