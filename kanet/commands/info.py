"""`kanet info [CKPT]`: what a checkpoint holds, and what can run KA-Net on this machine."""
from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kanet.cli import path_option


@dataclass
class Network:
    tensors: int
    parameters: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("exit 0; 1 when CKPT does not fit the KA-Net layout (the table says what misfits); "
                     "2 when CKPT is not a readable checkpoint")
    parser.add_argument("checkpoint", type=path_option, nargs="?",
                        help="a checkpoint to describe: format, stored precision, parameters, layout check, "
                             "RFF seed, training metadata")
    parser.add_argument("--json", type=path_option, metavar="FILE", help="also write the same facts as JSON")


def _row(key: str, value: object) -> None:
    print(f"  {key:22s} {value}")


def _print_checkpoint(info) -> None:
    from training.checkpoint_info import config_summary

    print(f"checkpoint {info.path} ({info.bytes / 1e6:.1f} MB)")
    _row("format", info.description)
    _row("stored precision", info.precision + ("" if info.precision == "float32" else " (loaded as float32)"))
    _row("parameters", f"{info.parameters:,} in {info.tensors} tensors")
    _row("layout", ("ok: " if info.layout_ok else "MISMATCH: ") + info.layout)
    _row("RFF (bottleneck)", info.rff)
    if info.step is not None:
        _row("step", info.step)
    for key, value in info.metadata.items():
        if key == "config" and isinstance(value, dict):
            value = config_summary(value) + " (all of it: --json)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        _row(key, value)


def _print_environment(env, network: Network | None) -> None:
    print("environment")
    _row("python", f"{env.python} on {env.platform}")
    if network is not None:
        _row("network", f"KA-Net, {network.parameters:,} parameters in {network.tensors} state_dict tensors")
    for lib in env.libraries:
        _row(lib.name, f"{lib.version or 'not installed':20s} {lib.purpose}")
    _row("onnxruntime providers", ", ".join(env.onnxruntime_providers) or "none (onnxruntime not installed)")
    if env.gpus:
        for gpu in env.gpus:
            _row(f"GPU {gpu.index}", f"{gpu.name}, {gpu.compute_capability}, {gpu.memory_gib} GiB "
                                     f"(driver: CUDA {env.cuda_driver})")
    else:
        _row("GPUs", f"no NVIDIA GPU visible: {env.no_gpu_reason}")


def run(args: argparse.Namespace) -> int:
    from runtime.environment import describe_environment

    info = network = None
    if args.checkpoint:
        from training.checkpoint_info import describe_checkpoint

        info = describe_checkpoint(args.checkpoint)
        _print_checkpoint(info)
    elif importlib.util.find_spec("torch"):  # a runtime-only install has no network to count
        from training import KANet

        model = KANet()
        network = Network(len(model.state_dict()), sum(p.numel() for p in model.parameters()))
    env = describe_environment()
    _print_environment(env, network)
    if args.json:
        facts = {"checkpoint": asdict(info) if info else None, "network": asdict(network) if network else None,
                 "environment": asdict(env)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(facts, indent=2))
    return 0 if info is None or info.layout_ok else 1
