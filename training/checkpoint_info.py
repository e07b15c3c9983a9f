"""What a checkpoint file holds, for `kanet info CKPT`: format, stored precision, layout, RFF, training metadata."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, _read, _split, load_weights
from .models import KANet

# format -> what it means to a user
FORMATS = {
    "training": "training checkpoint (a run's last.pt): deployed weights plus optimizer, EMA, schedule and RNG "
                "state; kanet train --resume continues it",
    "best": "a run's best.pt: deployable weights of the best validation PSNR, no training state",
    "release": "release: deployable weights only, stored in FP16 (training/release.py)",
    "weights": "kanet checkpoint: weights and random Fourier features",
    "official": "official KA-Net checkpoint: {'model': DataParallel state_dict}",
    "state_dict": "bare state_dict",
}
# training keys shown in the table; the whole configuration goes to --json
CONFIG_SHOWN = ("steps", "seed", "init", "data.clear_dir", "data.paired_dir", "data.batch_size", "data.crop_size",
                "optim.lr")


@dataclass
class CheckpointInfo:
    path: str
    bytes: int
    format: str                 # a key of FORMATS
    description: str            # FORMATS[format]
    precision: str              # dtypes of the stored floating-point weights: "float32", "float16", or a count of each
    tensors: int
    parameters: int             # learnable elements by the network's parameter names (BatchNorm statistics excluded)
    layout_ok: bool             # loads strictly into KANet, whose state_dict is the official layout
    layout: str                 # "matches ..." or what is missing, unexpected or wrong-shaped
    rff_seed: int | None        # None: not stored (official and bare state_dicts)
    rff: str
    step: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # validation scores, release info, config, other keys


def _format(payload: Mapping[str, Any]) -> str:
    if payload.get("format") == CHECKPOINT_FORMAT:
        if "release" in payload:
            return "release"
        if payload.get("kind") == "last" and "train_state" in payload:
            return "training"
        return "best" if payload.get("kind") == "best" else "weights"
    return "official" if isinstance(payload.get("model"), Mapping) else "state_dict"


def _precision(state: Mapping[str, torch.Tensor]) -> str:
    counts = Counter(str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point())
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{dtype} ({n} tensors)" for dtype, n in counts.most_common())


def _plain(value: Any) -> Any:
    """JSON-friendly metadata: tensors become a short description."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else f"tensor {str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _metadata(payload: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Everything but the weights: our config and release info whole, other keys (an official checkpoint's
    epoch, max_psnr, optimizer) as values or a size, so an optimizer state does not flood the report."""
    if kind == "state_dict":
        return {}
    skip = {"format", "version", "model", "rff", "rff_seed", "step", "train_state"}
    meta = {}
    for key, value in payload.items():
        if key in skip:
            continue
        if key in ("config", "release") or not isinstance(value, (Mapping, list, tuple)):
            meta[str(key)] = _plain(value)
        else:
            meta[str(key)] = f"{type(value).__name__} of {len(value)} entries"
    return meta


def _rff(model: KANet, seed: int, stored: Mapping[str, torch.Tensor]) -> str:
    if not stored:
        return f"not stored (the official code redraws them every pass): drawn from seed {seed} when loaded"
    drawn = model.rff_buffers()  # still the seed's draw: called before the stored ones are copied in
    same = set(stored) == set(drawn) and all(torch.equal(stored[k], drawn[k]) for k in drawn)
    return f"stored: seed {seed}'s draw" if same else f"stored: redrawn in training (seed {seed} does not reproduce them)"


def describe_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """CheckpointError for a file that is not a KA-Net checkpoint at all; a layout mismatch is described."""
    path = Path(path)
    payload = _read(path)
    state, stored_rff, seed = _split(payload, path)
    kind = _format(payload)
    model = KANet(rff_seed=seed)
    rff = _rff(model, seed, stored_rff)
    parameter_names = {name for name, _ in model.named_parameters()}
    try:
        load_weights(model, state, stored_rff, str(path))
        layout_ok = True
        layout = f"matches the official KA-Net layout ({len(state)} tensors)"
    except CheckpointError as exc:
        layout_ok = False
        layout = "; ".join(line.strip() for line in str(exc).splitlines()[1:]) or str(exc)
    return CheckpointInfo(
        path=str(path), bytes=path.stat().st_size, format=kind, description=FORMATS[kind],
        precision=_precision(state), tensors=len(state),
        parameters=sum(v.numel() for k, v in state.items() if k in parameter_names),
        layout_ok=layout_ok, layout=layout, rff_seed=seed if kind not in ("official", "state_dict") else None,
        rff=rff, step=int(payload["step"]) if "step" in payload and kind != "state_dict" else None,
        metadata=_metadata(payload, kind))


def config_summary(config: Mapping[str, Any]) -> str:
    """The training keys a reader looks for first, as key=value."""
    shown = []
    for dotted in CONFIG_SHOWN:
        value: Any = config
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None:
            shown.append(f"{dotted}={value}")
    return ", ".join(shown)
