"""`kanet demo`: the whole job on the project's checkpoint, end to end, with a report.

checkpoint -> ONNX (FP32, FP16) -> engine -> parity -> dehaze the sample photographs and a
sample clip with the fastest back-end present -> quality scores next to the dark channel
prior -> summary (Markdown + contact sheet). The export, engine and parity report are reused
when the checkpoint has not changed; the dehazing is rerun so the timings are this run's.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from benchmarks.video import write_clip
from evaluation.dcp import dehaze_dcp
from evaluation.evaluate import evaluate, list_images, markdown_table
from evaluation.sheet import contact_sheet, labelled_row
from runtime.artifacts import ExportFolder
from runtime.cuda import device_count
from runtime.imagefile import read_image, write_image
from runtime.manifest import sha256_file
from runtime.openvino_backend import OpenVinoOptions
from runtime.summary import RunSummary

from .bundled import DEFAULT_CHECKPOINT, SAMPLES

if TYPE_CHECKING:  # export.parity imports torch: only when parity runs
    from export.parity import Comparison, ParityReport

METHODS = ("hazy input", "dark channel prior", "KA-Net")
OPENVINO_CANDIDATE = "fp32_onnx_openvino"  # parity's label for the FP32 ONNX model checked on OpenVINO


@dataclass
class DemoOptions:
    out: Path
    checkpoint: Path = DEFAULT_CHECKPOINT
    photos: Path = SAMPLES
    max_side: int | None = 480        # CPU default; None keeps the photographs' full size
    clip_frames: int = 48
    clip_size: tuple[int, int] = (240, 320)  # H, W
    backend: str = "auto"
    device: str = "auto"              # runtime.devices: auto, cpu or cuda:N
    cuda_unusable: bool = False       # a GPU CUDA cannot use (old driver): engines built ahead of time, as on a CPU
    half: bool = False                # dehaze with the FP16 engine / ONNX
    cache_dir: Path | None = None     # export.cache: None is the user's cache folder
    openvino: OpenVinoOptions | None = None  # with backend openvino, or auto where it picks OpenVINO


@dataclass
class DemoLog:
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def timed(self, step: str, fn: Callable, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start
        return result


def export_step(opts: DemoOptions, log: DemoLog) -> dict:
    """Export + engine, reused when export.json was written from the same checkpoint."""
    from export.engine import RTX_TARGETS, BuildOptions
    from export.pipeline import EngineBuild, export_checkpoint

    out = opts.out / "export"
    folder = ExportFolder(out)
    sha = sha256_file(opts.checkpoint)
    if folder.record.is_file():
        summary = json.loads(folder.record.read_text())
        files = [folder.fp32_onnx, folder.fp16_onnx, folder.engine_source("fp16"), folder.engine("fp16")]
        if summary["checkpoint"]["sha256"] == sha and all(f.is_file() for f in files):
            log.notes["export"] = "reused (same checkpoint)"
            return summary
    # where CUDA cannot say which GPU this is, TensorRT-RTX builds for all its targets, as on a CPU machine
    options = BuildOptions(compute_capabilities=RTX_TARGETS) if opts.cuda_unusable else BuildOptions()
    summary = log.timed("export + engine", export_checkpoint, opts.checkpoint, out, options=options,
                        cache_dir=opts.cache_dir)
    build = EngineBuild.from_json(summary["engine"])
    log.notes["export"] = ("engine reused from cache" if build.reused_from_cache
                           else f"engine built in {build.manifest.build_seconds} s")
    return summary


def parity_step(opts: DemoOptions, summary: dict, dehazing_backend: str, log: DemoLog, progress) -> ParityReport:
    """PyTorch FP32 vs the FP32 and FP16 ONNX on ONNX Runtime, the engine where a GPU runs it, and the FP32 ONNX on
    OpenVINO where the demo dehazes with OpenVINO: every back-end the demo's images come from is checked."""
    from export.parity import (ParityReport, close_candidates, compare_candidates, frame_cases, open_candidates,
                               write_report)
    from training import load_checkpoint

    folder = ExportFolder(opts.out / "export")
    candidates = {"fp32_onnx": (folder.fp32_onnx, "fp32"), "fp16_onnx": (folder.fp16_onnx, "fp16")}
    if opts.device != "cpu" and device_count():
        candidates["fp16_engine"] = (folder.engine("fp16"), "fp16")
    on_openvino = {OPENVINO_CANDIDATE: (folder.fp32_onnx, "fp32")} if dehazing_backend.startswith("openvino") else {}
    path = opts.out / "parity.json"
    if path.is_file() and log.notes.get("export", "").startswith("reused"):
        report = ParityReport.from_json(json.loads(path.read_text()))
        if (report.checkpoint_sha256 == summary["checkpoint"]["sha256"]
                and {r.candidate for r in report.results} >= {*candidates, *on_openvino}):
            log.notes["parity"] = "reused (same checkpoint)"
            return report
    cases = frame_cases(sizes=((1, 96, 128),), photos=opts.photos)
    progress.reset(total=len(cases) * (len(candidates) + len(on_openvino)))

    def check() -> ParityReport:
        """One comparison of every back-end, so each case's PyTorch reference (the slow part on a CPU) runs once."""
        runners = open_candidates(candidates, opts.device)
        try:
            runners |= open_candidates(on_openvino, openvino=opts.openvino or OpenVinoOptions())
            return compare_candidates(load_checkpoint(opts.checkpoint), runners, cases, progress=progress)
        finally:
            close_candidates(runners)

    report = log.timed("parity", check)
    report.checkpoint_sha256 = summary["checkpoint"]["sha256"]
    write_report(report, path)
    return report


def photos_step(opts: DemoOptions, dehazer, log: DemoLog) -> tuple:
    images_dir = opts.out / "images"
    methods = {"hazy input": lambda f, n: f, "dark channel prior": lambda f, n: dehaze_dcp(f),
               "KA-Net": lambda f, n: dehazer(f)}
    report = log.timed("dehaze photographs", evaluate, opts.photos, methods, save_dir=images_dir,
                       max_side=opts.max_side)
    names = [p.stem for p in list_images(opts.photos) if (images_dir / "KA-Net" / f"{p.stem}.png").is_file()]
    (opts.out / "side_by_side").mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        images = [read_image(images_dir / m / f"{name}.png", cv2.IMREAD_COLOR) for m in METHODS]
        pair = labelled_row([(images[0], "hazy"), (images[2], "KA-Net")])
        write_image(opts.out / "side_by_side" / f"{name}.png", pair)
        rows.append(list(zip(images, METHODS)))
    write_image(opts.out / "contact_sheet.png", contact_sheet(rows))
    return report, names


def clip_step(opts: DemoOptions, dehazer, log: DemoLog) -> RunSummary:
    """Generate the hazy clip, then dehaze it through the runtime's pipeline, side by side."""
    from runtime.pipeline import Pipeline
    from runtime.sinks import sinks_for
    from runtime.sources import open_sources

    hazy_clip = write_clip(opts.out / "clip_hazy.mp4", *opts.clip_size, opts.clip_frames, fps=15,
                           source=list_images(opts.photos)[0])
    output = opts.out / "clip_dehazed.mp4"
    sources = open_sources([str(hazy_clip)])
    pipeline = Pipeline(dehazer, sources, sinks_for(str(output), sources), batch=1, side_by_side=True)
    summary = log.timed("dehaze clip", pipeline.run)
    (opts.out / "clip_run.json").write_text(json.dumps(summary.to_json(), indent=2))
    return summary


def write_summary(opts: DemoOptions, export: dict, parity: ParityReport, quality, clip: RunSummary, backend_md: str,
                  log: DemoLog) -> Path:
    from export.pipeline import EngineBuild

    engine = EngineBuild.from_json(export["engine"]).manifest
    profile = engine.profiles[0]
    worst: dict[str, Comparison] = {}
    for r in parity.results:
        if r.candidate not in worst or r.metrics.psnr_db < worst[r.candidate].metrics.psnr_db:
            worst[r.candidate] = r
    lines = [
        "# KA-Net demo", "",
        f"Checkpoint `{opts.checkpoint.name}` (sha256 {export['checkpoint']['sha256'][:12]}), "
        f"dehazing back-end here: {backend_md}.", "",
        "## Artifacts", "",
        f"- ONNX: `export/kanet_fp32.onnx`, `export/kanet_fp16.onnx` (ONNX Runtime), "
        f"`export/kanet_fp16_tensorrt.onnx` (engine source, {len(export['fp32_nodes'])} nodes kept FP32)",
        f"- Engine: `export/kanet_fp16.plan` ({engine.tensorrt.flavour} {engine.tensorrt.version}, "
        f"{engine.engine.bytes / 2**20:.0f} MiB, targets {', '.join(engine.targets)}, "
        f"profile {profile.min} .. {profile.max}; {log.notes.get('export', '')})",
        "", "## Parity against PyTorch FP32", "",
        f"{'PASSED' if parity.passed else 'FAILED'} ({log.notes.get('parity', 'checked in this run')}); "
        "worst case per model:", "",
        "| model | case | max abs diff | PSNR dB | 8-bit values within 1 step | within 2 steps |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in worst.items():
        m = r.metrics
        lines.append(f"| {name} | {r.case} | {m.max_abs:.2e} | {m.psnr_db:.1f} | "
                     f"{m.within_1_step:.4%} | {m.within_2_steps:.4%} |")
    lines += ["", markdown_table(quality, "Quality on the sample photographs").replace("## ", "## ", 1),
              "![contact sheet](contact_sheet.png)", "",
              "## Sample clip", "",
              f"`clip_hazy.mp4` -> `clip_dehazed.mp4` (side by side): {clip.frames_out} of {clip.frames_in} "
              f"frames, {clip.fps:.1f} frames/s end to end (decode + dehaze + encode).", "",
              "## Timings (this run)", "", "| step | seconds |", "| --- | ---: |"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in log.seconds.items()]
    path = opts.out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(opts: DemoOptions, progress) -> Path:
    """Every step in order; `progress` is a tqdm bar (or runtime.progress.LineProgress) that shows the export's
    elapsed time and then parity's checks, closed when parity is done."""
    from runtime import Dehazer

    opts.out.mkdir(parents=True, exist_ok=True)
    log = DemoLog()
    progress.set_description("export + engine")
    export = export_step(opts, log)
    with Dehazer.load(opts.out / "export", backend=opts.backend, device=opts.device, half=opts.half,
                      openvino=opts.openvino) as dehazer:
        progress.set_description("parity")
        parity = parity_step(opts, export, dehazer.backend, log, progress)
        progress.close()  # its last count is parity's; the photographs and the clip report their own
        backend_md = f"**{dehazer.backend}**" + (f" (`--backend auto`: {dehazer.chosen})" if dehazer.chosen else "")
        quality, _ = photos_step(opts, dehazer, log)
        clip = clip_step(opts, dehazer, log)
    (opts.out / "quality.json").write_text(json.dumps(quality.to_json(), indent=2))
    return write_summary(opts, export, parity, quality, clip, backend_md, log)
