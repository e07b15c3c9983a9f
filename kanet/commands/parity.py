"""`kanet parity CHECKPOINT --onnx ... --engine ...`: exported models against PyTorch FP32."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kanet.bundled import SAMPLES
from kanet.cli import UserError, number, path_option
from runtime.artifacts import ExportFolder

from ._model import MODEL_HELP, add_device_argument, add_openvino_arguments, openvino_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("exits 1 when any threshold fails, 2 on bad input or when every case was skipped (nothing "
                     "compared: frames outside the engine's profile). Report: JSON at --report.")
    parser.add_argument("checkpoint", type=path_option, help="the checkpoint the models were exported from (the FP32 reference)")
    parser.add_argument("--model", type=path_option, action="append", default=[], metavar="M",
                        help=f"the model `kanet run --model M` would run, resolved the same way (repeatable): "
                             f"{MODEL_HELP}")
    parser.add_argument("--onnx", type=path_option, action="append", default=[], metavar="PATH",
                        help="model to check (repeatable); precision read from the name (fp16 if it says so)")
    parser.add_argument("--engine", type=path_option, action="append", default=[], metavar="PATH",
                        help="engine (.plan with its manifest) to check (repeatable); needs an NVIDIA GPU")
    parser.add_argument("--export-dir", type=path_option, metavar="DIR",
                        help="check DIR/kanet_fp32.onnx, DIR/kanet_fp16.onnx, the engine source DIR/kanet_fp16_tensorrt.onnx "
                             "(on ONNX Runtime) and, on a GPU machine, DIR/kanet_*.plan")
    parser.add_argument("--backend", choices=("auto", "onnxruntime", "openvino"), default="auto",
                        help="what runs the ONNX models: ONNX Runtime's CPU provider (auto, default) or OpenVINO "
                             "(the FP32 ONNX only; --export-dir then checks kanet_fp32.onnx at --ov-precision)")
    add_openvino_arguments(parser)
    add_device_argument(parser, "the GPU that runs the engines (cpu: check the ONNX models only; they run on "
                                "ONNX Runtime's CPU provider, the reference PyTorch on the CPU)")
    parser.add_argument("--photos", type=path_option, default=str(SAMPLES), metavar="DIR",
                        help="real photographs to include (default: the six sample photographs installed with "
                             "the package)")
    parser.add_argument("--report", type=path_option, default="parity.json", metavar="FILE", help="JSON report (default parity.json)")
    parser.add_argument("--fp32-max-abs", type=number(float, above=0), default=1e-4, help="FP32 max |diff| on [0, 1] (default 1e-4)")
    parser.add_argument("--fp16-psnr", type=number(float, above=0), default=45.0, help="FP16 minimum PSNR in dB (default 45)")
    parser.add_argument("--fp16-within-2", type=number(float, above=0, at_most=1), default=0.99,
                        help="FP16 minimum share of 8-bit values within 2 steps (default 0.99)")


def run(args: argparse.Namespace) -> int:
    from runtime.progress import progress

    from export.parity import (Thresholds, close_candidates, compare_candidates, frame_cases, open_candidates,
                               write_report)
    from training import load_checkpoint

    from runtime.dehazer import ENGINE_SUFFIXES, resolve_model
    from runtime.devices import choose_device, parse_device
    from runtime.manifest import read_manifest

    asked = parse_device(args.device)
    choice = choose_device(asked)
    if choice.note:
        print(f"kanet parity: {choice.note}", file=sys.stderr)
    device, gpus = choice.device, choice.gpus
    openvino = openvino_options(args) if args.backend == "openvino" else None  # auto checks on ONNX Runtime
    paths = [Path(p) for p in args.onnx]
    engines = [Path(p) for p in args.engine]
    for model in (resolve_model(Path(m), "openvino" if openvino else "auto", device) for m in args.model):
        (engines if model.suffix in ENGINE_SUFFIXES else paths).append(model)
    if args.export_dir:
        folder = ExportFolder(Path(args.export_dir))
        paths += [folder.fp32_onnx] + ([] if openvino else [folder.fp16_onnx, folder.engine_source("fp16")])
        found = folder.engines()
        if found and not gpus:
            print(f"kanet parity: {', '.join(map(str, found))} not checked: running an engine needs an NVIDIA GPU"
                  f"{' (--device cpu)' if asked == 'cpu' else ''}")
        elif found:
            engines += found
    if engines and not gpus:
        raise UserError(f"{engines[0]}: running an engine needs an NVIDIA GPU; "
                        f"{'--device cpu' if asked == 'cpu' else 'none is usable here'}")
    if not paths and not engines:
        raise UserError("nothing to check: give --model M, --onnx PATH, --engine PATH or --export-dir DIR")
    if openvino:
        candidates = {f"{p.stem}_openvino": (p, openvino.precision) for p in paths}
    else:
        candidates = {p.stem: (p, "fp16" if "fp16" in p.stem else "fp32") for p in paths}
    for engine in engines:
        candidates[f"{engine.stem}_engine"] = (engine, read_manifest(engine).precision)
    photos = Path(args.photos) if args.photos else None
    if photos is not None and not photos.is_dir():
        raise UserError(f"{photos}: no such folder of photographs")
    limits = Thresholds(fp32_max_abs=args.fp32_max_abs, fp16_psnr_db=args.fp16_psnr, fp16_within_2=args.fp16_within_2)
    runners = open_candidates(candidates, device, openvino)  # a file that is not a model: one line, before any work
    try:
        model = load_checkpoint(args.checkpoint)
        cases = frame_cases(photos=photos)
        with progress(len(cases) * len(candidates), desc="parity", unit="check") as bar:
            report = compare_candidates(model, runners, cases, limits, progress=bar)
    finally:
        close_candidates(runners)
    write_report(report, args.report)
    print(f"{'case':24s} {'model':16s} {'max|d|':>9s} {'mean|d|':>9s} {'PSNR':>7s} {'<=1':>8s} {'<=2':>8s}  result")
    for r in report.results:
        m = r.metrics
        print(f"{r.case:24s} {r.candidate:16s} {m.max_abs:9.2e} {m.mean_abs:9.2e} {m.psnr_db:7.1f} "
              f"{m.within_1_step:8.4%} {m.within_2_steps:8.4%}  {'; '.join(r.failures) or 'ok'}")
    for s in report.skipped:
        print(f"{s.case:24s} {s.candidate:16s} skipped: {s.reason}")
    if not report.results:  # not a failure of the models: nothing tested them
        reasons = "; ".join(sorted({f"{s.candidate}: {s.reason}" for s in report.skipped}))
        raise UserError(f"nothing compared: every case was skipped ({reasons}); report written to {args.report}")
    print(f"{'PASSED' if report.passed else 'FAILED'}; report written to {args.report}")
    return 0 if report.passed else 1
