"""`kanet info`: what the network is and what can run it here."""
from __future__ import annotations

import argparse
import importlib.util

from kanet.cli import path_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=path_option, nargs="?", help="a checkpoint to load and describe (optional)")


def run(args: argparse.Namespace) -> int:
    from training import KANet, load_checkpoint

    model = load_checkpoint(args.checkpoint) if args.checkpoint else KANet()
    params = sum(p.numel() for p in model.parameters())
    print(f"KA-Net: {params:,} parameters, {len(model.state_dict())} state_dict tensors, rff_seed {model.rff_seed}")
    for name in ("torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "cv2", "av"):
        print(f"  {name:13s} {'installed' if importlib.util.find_spec(name) else 'not installed'}")
    return 0
