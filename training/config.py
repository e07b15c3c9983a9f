"""The training configuration: one tree of dataclasses, read from YAML or TOML, overridable per key.

Precedence: defaults < config file < `--set section.key=value` < named flags.
`kanet train --print-config` prints the whole tree with its defaults.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from runtime.errors import KanetError

from .losses import DEFAULT_LAYER_WEIGHTS, NEGATIVES
from .reweighting import ReweightConfig
from .synthesis import HazeConfig


class ConfigError(KanetError, ValueError):
    """A configuration file or override that cannot be used."""


@dataclass(frozen=True)
class DataConfig:
    clear_dir: str | None = None  # clear images; haze synthesised on the fly
    paired_dir: str | None = None  # DIR/hazy + DIR/clear (or GT), matched by name
    depth_dir: str | None = None  # depth maps for clear_dir images, same stem (.npy or image; larger = farther)
    crop_size: int = 128  # multiple of 16, >= 48
    batch_size: int = 4
    scale_range: tuple[float, float] = (1.0, 1.0)  # random rescale before cropping (multi-scale); 1-1 is off
    hflip: bool = True
    vflip: bool = False  # off: a vertical flip turns the sky (far, hazy) to the bottom
    val_fraction: float = 0.1  # scenes held out for validation (at least one when there are two or more)
    val_size: int = 256  # validation centre crops, at most this per side
    val_max_images: int = 8
    workers: int = 0  # DataLoader worker processes (samples are identical with any number)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 2e-4
    weight_decay: float = 1e-4  # AdamW only
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500  # linear warm-up, capped at a tenth of the run; then cosine decay
    min_lr_ratio: float = 0.01  # final lr = lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass(frozen=True)
class LossConfig:
    reconstruction: str = "l1"  # l1 | charbonnier
    ssim_weight: float = 0.0  # weight of (1 - SSIM) per sample
    colour_weight: float = 0.0  # weight of the RGB-angle colour error per sample
    chroma_weight: float = 0.0  # weight of the low-pass opponent-colour error per sample (casts, regional recolouring)
    contrastive: bool = True
    contrastive_weight: float = 0.1
    vgg_weights: str | None = None  # torchvision vgg19-dcbb9e9d.pth; default: the torch hub cache if present
    layer_weights: tuple[float, ...] = DEFAULT_LAYER_WEIGHTS  # relu1_1 ... relu5_1
    negatives: tuple[str, ...] = NEGATIVES
    blur_sigma: tuple[float, float] = (1.0, 3.0)
    noise_sigma: tuple[float, float] = (0.02, 0.1)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    out: str = "runs/kanet"
    seed: int = 0  # data order, crops, haze, RFF and weight initialisation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # CUDA only: bfloat16 autocast (float16 with loss scaling where bf16 is missing)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    val_every: int = 0  # steps between validations; 0: once per epoch (a pass over the training scenes, >= 500 steps)
    log_every: int = 10  # steps per CSV row (train values averaged over the window)
    save_every: int = 0  # steps between last.pt writes; 0: at each validation
    ema: bool = True
    ema_decay: float = 0.999
    rff_redraw: bool = True  # redraw the bottleneck's random Fourier features each pass, as the official code
    init: str | None = None  # checkpoint to start from (official, ours or bare state_dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    haze: HazeConfig = field(default_factory=HazeConfig)

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))


def plain(value: Any) -> Any:
    """Tuples as lists (YAML-friendly), recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type hint `hint` (dataclass, tuple, optional, scalar)."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a section (mapping), got {value!r}")
        return build(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):  # bool is an int subclass
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def build(cls: type, values: Mapping[str, Any], where: str = "config") -> Any:
    """An instance of dataclass `cls` from a (partial) mapping; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; known: {sorted(hints)}")
    try:
        return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) configuration as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(path.read_text())
        values = yaml.safe_load(path.read_text()) or {}
    except Exception as exc:  # both parsers raise their own error types; all mean a malformed file
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict update (sections merge, values replace)."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) else value
    return merged


def dotted(assignments: list[str]) -> dict[str, Any]:
    """`["optim.lr=1e-4", "haze.beta=[0.5, 1.5]"]` -> nested dict; values parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
        *sections, name = key.strip().split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(text)
    return tree


def load(values: Mapping[str, Any]) -> TrainConfig:
    return build(TrainConfig, values)


def write(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
