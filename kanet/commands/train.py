"""`kanet train`: train or fine-tune KA-Net; writes OUT/last.pt, OUT/best.pt, OUT/log.csv, OUT/config.yaml."""
from __future__ import annotations

import argparse
import logging
import sys

from kanet.cli import UserError, number, path_option

from ._model import add_device_argument

# flag dest -> (config key path, value to store; None means the flag's own value)
_FLAG_KEYS: dict[str, tuple[tuple[str, ...], object]] = {
    "clear_dir": (("data", "clear_dir"), None),
    "paired_dir": (("data", "paired_dir"), None),
    "depth_dir": (("data", "depth_dir"), None),
    "steps": (("steps",), None),
    "batch_size": (("data", "batch_size"), None),
    "crop_size": (("data", "crop_size"), None),
    "workers": (("data", "workers"), None),
    "out": (("out",), None),
    "init": (("init",), None),
    "val_every": (("val_every",), None),
    "lr": (("optim", "lr"), None),
    "vgg_weights": (("loss", "vgg_weights"), None),
    "device": (("device",), None),
    "threads": (("threads",), None),
    "seed": (("seed",), None),
    "no_reweight": (("reweight", "enabled"), False),
    "no_contrastive": (("loss", "contrastive"), False),
    "no_ema": (("ema",), False),
    "no_amp": (("amp",), False),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Every option of the configuration (see --print-config) can be set in --config FILE (YAML or "
                     "TOML) or with --set section.key=value; named flags win over both. Ctrl-C saves OUT/last.pt "
                     "after the current step; --resume OUT/last.pt continues exactly where it stopped.")
    data = parser.add_argument_group("data (give --clear-dir or --paired-dir)")
    data.add_argument("--clear-dir", type=path_option, metavar="DIR", help="clear images; haze is synthesised on the fly")
    data.add_argument("--paired-dir", type=path_option, metavar="DIR",
                      help="DIR/hazy and DIR/clear (or GT) matched by name (0001_0.8_0.2.jpg -> 0001.png, "
                           "01_hazy -> 01_GT); `kanet synth` writes such a folder")
    data.add_argument("--depth-dir", type=path_option, metavar="DIR", help="depth maps for --clear-dir images (same stem; larger = farther)")
    data.add_argument("--batch-size", type=number(int, 1), metavar="B", help="samples per step (default 4)")
    data.add_argument("--crop-size", type=number(int, 48), metavar="S", help="square training crops, multiple of 16, >= 48 (default 128)")
    data.add_argument("--workers", type=number(int, 0), metavar="N", help="data loader processes (default 0: in the main process)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--config", type=path_option, metavar="FILE", help="YAML (.yaml/.yml) or TOML (.toml) configuration")
    run_group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override one configuration key, e.g. --set optim.warmup_steps=100 (repeatable)")
    run_group.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    run_group.add_argument("--steps", type=number(int, 1), metavar="N", help="optimizer steps in all (default 1000)")
    run_group.add_argument("--out", type=path_option, metavar="DIR", help="output folder (default runs/kanet; on --resume, the resumed run's)")
    run_group.add_argument("--init", type=path_option, metavar="CKPT", help="start from these weights: an official KA-Net checkpoint, "
                                                          "one of ours, or a bare state_dict (fine-tuning)")
    run_group.add_argument("--resume", type=path_option, metavar="CKPT", help="continue a run from its OUT/last.pt (config, weights, "
                                                            "EMA, optimizer, schedule, RNG and data position)")
    run_group.add_argument("--val-every", type=number(int, 0), metavar="K", help="validate (and save) every K steps (default: each epoch, at least 500 steps)")
    run_group.add_argument("--seed", type=number(int, 0), metavar="N", help="seed for weights, data, haze (default 0)")
    add_device_argument(run_group, "where training runs (wins over --config and a resumed run's)", default=None)
    run_group.add_argument("--threads", type=number(int, 0), metavar="N", help="torch CPU threads (default: torch's choice)")
    run_group.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    model = parser.add_argument_group("optimisation and losses")
    model.add_argument("--lr", type=number(float, above=0), help="peak learning rate (default 2e-4; warm-up then cosine)")
    model.add_argument("--no-ema", action="store_true", help="deploy the raw weights instead of their EMA")
    model.add_argument("--no-reweight", action="store_true", help="no stable-learning sample reweighting")
    model.add_argument("--no-contrastive", action="store_true", help="no Gaussian perceptual contrastive loss (faster)")
    model.add_argument("--vgg-weights", type=path_option, metavar="FILE",
                       help="torchvision's vgg19-dcbb9e9d.pth (default: the torch hub cache copy if present; "
                            "without one the contrastive loss runs on random VGG features, with a warning)")


def _overrides(args: argparse.Namespace) -> dict:
    from training.config import dotted, merge, read_file

    flags: dict = {}
    for dest, (keys, value) in _FLAG_KEYS.items():
        given = getattr(args, dest)
        if given is None or given is False:
            continue
        node = flags
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = given if value is None else value
    base = read_file(args.config) if args.config else {}
    return merge(merge(base, dotted(args.set)), flags)


def run(args: argparse.Namespace) -> int:
    import yaml

    from training.trainer import Trainer, read_resumable, resolve_config

    logging.basicConfig(level=logging.INFO, format="kanet train: %(message)s", stream=sys.stderr)
    if args.resume and args.init:
        raise UserError("--resume continues a run with its own weights: drop --init")
    payload = read_resumable(args.resume) if args.resume else None
    config = resolve_config(_overrides(args), payload["config"] if payload else None)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if payload and int(payload["step"]) >= config.steps:  # checked before the data and VGG are loaded
        print(f"{args.resume}: already finished at step {payload['step']}; nothing to do "
              f"(--steps N above {payload['step']} trains on)")
        return 0
    result = Trainer(config, payload).fit()
    best = f"{result.best} (validation PSNR {result.best_psnr:.2f} dB)" if result.best else "none yet"
    print(f"{'interrupted' if result.interrupted else 'finished'} at step {result.step}: last {result.last}; best {best}")
    if result.interrupted:
        print(f"continue with: kanet train --resume {result.last}")
        return 130
    print(f"deploy with: kanet export {result.best or result.last} --out DIR")
    return 0
