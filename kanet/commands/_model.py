"""Flags shared by every command that runs a model: one spelling, one help text, one parser each.

Models are resolved by runtime.Dehazer.load (runtime.dehazer.resolve_model), devices by
runtime.devices.parse_device, so every command takes the same values the same way.
"""
from __future__ import annotations

from pathlib import Path

from export.cache import user_cache_dir
from runtime.dehazer import BACKENDS
from runtime.devices import DEVICE_HELP
from runtime.errors import KanetError
from runtime.openvino_backend import MODES, PRECISIONS, OpenVinoOptions

from kanet.cli import number, path_option

MODEL_HELP = ("engine (.plan with its .json manifest: TensorRT on a GPU), ONNX model (OpenVINO or ONNX Runtime: "
              "see --backend), a `kanet export` folder (its engine where a GPU can run it, else its FP32 ONNX), or a "
              "model on a Triton "
              "server: grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL (e.g. one `kanet triton` wrote; the server "
              "decides how it runs, so --backend, --device and --half stay unset)")


def add_device_argument(parser, what: str = "where the model runs", default: str | None = "auto") -> None:
    """--device, parsed by runtime.devices.parse_device in the command (a bad value is a one-line error).
    default None: the flag only overrides a configuration that sets the device."""
    parser.add_argument("--device", default=default, metavar="auto|cpu|N|cuda:N", help=f"{what}: {DEVICE_HELP}")


def add_model_arguments(parser, model: str | None = MODEL_HELP, required: bool = True) -> None:
    """--model (unless `model` is None: the command makes its own), --backend, --device and --half, as
    Dehazer.load takes them."""
    if model:
        parser.add_argument("--model", type=path_option, required=required, metavar="M", help=model)
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): an engine on TensorRT; an ONNX model on ONNX Runtime's GPU provider "
                             "where a GPU is usable, else (FP32 models) on OpenVINO where installed, else on ONNX "
                             "Runtime's CPU provider; the run says what it chose and why. tensorrt: an engine; "
                             "onnxruntime: an ONNX model; openvino: an ONNX model (an export folder's "
                             "kanet_fp32.onnx) on OpenVINO's CPU plugin")
    add_openvino_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--half", action="store_true",
                        help="FP16: an export folder's kanet_fp16.plan (where a GPU runs it) or kanet_fp16.onnx; "
                             "an FP32 model given directly is an error")


def add_openvino_arguments(parser) -> None:
    """--ov-precision, --ov-threads, --ov-mode and --ov-cache, read only with --backend openvino (see
    openvino_options)."""
    parser.add_argument("--ov-precision", choices=tuple(PRECISIONS),
                        help="--backend openvino: compute in fp32 (default) or bf16 (CPUs with AVX-512 BF16 or AMX; "
                             "others run fp32)")
    parser.add_argument("--ov-threads", type=number(int, 1), metavar="N",
                        help="--backend openvino: inference threads (default: OpenVINO's choice, every core)")
    parser.add_argument("--ov-mode", choices=tuple(MODES),
                        help="--backend openvino: latency (one request on every core) or throughput (the cores split "
                             "into streams, a batch's frames run as parallel requests: OpenVINO's advice for many-core "
                             "CPUs; on 2 cores it measured the same as latency); default: throughput when --batch is "
                             "above 1, else latency")
    parser.add_argument("--ov-cache", type=path_option, metavar="DIR",
                        help="--backend openvino: compiled-model cache, so a second start skips compiling "
                             "(default: openvino/ in the user cache folder, see --cache-dir)")


def openvino_options(args) -> OpenVinoOptions | None:
    """Dehazer.load's `openvino` argument from the parsed flags (the defaults with --backend auto, which may pick
    OpenVINO); an --ov-* flag without --backend openvino is an error (it could be silently ignored)."""
    given = [f"{flag} {value}" for flag, value in (("--ov-precision", args.ov_precision),
                                                   ("--ov-threads", args.ov_threads), ("--ov-mode", args.ov_mode),
                                                   ("--ov-cache", args.ov_cache)) if value]
    if given and args.backend != "openvino":
        raise KanetError(f"{' and '.join(given)} needs --backend openvino")
    if args.backend not in ("openvino", "auto"):
        return None
    cache = Path(args.ov_cache) if args.ov_cache else user_cache_dir() / "openvino"
    batched = getattr(args, "batch", 1) > 1  # commands without --batch run one frame per call
    return OpenVinoOptions(precision=args.ov_precision or "fp32", cache_dir=cache, threads=args.ov_threads,
                           mode=args.ov_mode or ("throughput" if batched else "latency"))
