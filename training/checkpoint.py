"""Loading and saving KA-Net checkpoints: official, ours, or a bare state_dict."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from runtime.errors import KanetError

from .models import KANet

CHECKPOINT_FORMAT = "kanet-checkpoint"
CHECKPOINT_VERSION = 1
_DATA_PARALLEL_PREFIX = "module."


class CheckpointError(KanetError, ValueError):
    """A checkpoint that cannot be read or does not fit the network."""


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    if state and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        return {key[len(_DATA_PARALLEL_PREFIX):]: value for key, value in state.items()}
    return dict(state)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for damaged files; all mean the same here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {reason}") from exc


def _split(payload: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], int]:
    """(state_dict, rff buffers, rff_seed) from any supported checkpoint layout."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(payload).__name__}")
    if payload.get("format") == CHECKPOINT_FORMAT:
        return _strip_prefix(payload["model"]), dict(payload.get("rff", {})), int(payload.get("rff_seed", 0))
    if isinstance(payload.get("model"), Mapping):  # official: {'model': DataParallel state_dict, ...}
        return _strip_prefix(payload["model"]), {}, 0
    if all(isinstance(value, Tensor) for value in payload.values()):
        return _strip_prefix(payload), {}, 0
    raise CheckpointError(
        f"{path}: not a KA-Net checkpoint: expected our format, an official {{'model': state_dict}} "
        f"dict, or a bare state_dict; found keys {sorted(payload)[:8]}"
    )


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise CheckpointError listing missing, unexpected and wrong-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or wrong:
        lines = [f"{source}: checkpoint does not match the KA-Net layout"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointError("\n".join(lines))


def load_checkpoint(path: str | os.PathLike, *, rff_seed: int | None = None, eval_mode: bool = True) -> KANet:
    """A ready KA-Net from an official checkpoint, one of ours, or a bare state_dict.

    Official checkpoints carry no random Fourier features (the official code
    redraws them every pass); they are drawn from `rff_seed` (default 0).
    Ours store theirs, which win unless `rff_seed` is given.
    """
    path = Path(path)
    state, rff, stored_seed = _split(_read(path), path)
    model = KANet(rff_seed=stored_seed if rff_seed is None else rff_seed)
    load_weights(model, state, rff if rff_seed is None else {}, str(path))
    return model.eval() if eval_mode else model


def load_weights(model: KANet, state: Mapping[str, Tensor], rff: Mapping[str, Tensor], source: str) -> None:
    """Strictly load a state_dict and stored random Fourier features (if any); CheckpointError says what misfits."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    if rff:
        buffers = model.rff_buffers()
        if set(rff) != set(buffers):
            raise CheckpointError(f"{source}: random Fourier features {sorted(rff)} do not match {sorted(buffers)}")
        for name, value in rff.items():
            buffers[name].copy_(value)


def checkpoint_payload(model: KANet, **extra: Any) -> dict[str, Any]:
    """Our checkpoint dict: state_dict, RFF buffers and seed, plus any training state."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "rff": {name: buf.detach().clone() for name, buf in model.rff_buffers().items()},
        "rff_seed": model.rff_seed,
        **extra,
    }


def save_checkpoint(model: KANet, path: str | os.PathLike, **extra: Any) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    return save_payload(checkpoint_payload(model, **extra), path)


def save_payload(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is a normal, shareable file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The whole payload of one of our checkpoints (training state included), with clear errors."""
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by this project (official and bare "
                              "state_dicts hold weights only: use them with --init)")
    return dict(payload)
