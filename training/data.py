"""Training data: image folders, hazy/clear pairing, crops and flips, validation split.

Every training sample is a pure function of (seed, sample number): which image,
the crop, the flip, the scale and the synthetic haze all come from
`np.random.default_rng([seed, k])`. A run therefore gives the same batches with
any number of loader workers, and a resumed run continues with exactly the
batches the uninterrupted run would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from evaluation.pairing import pair_key
from runtime.errors import KanetError
from runtime.imagefile import IMAGE_SUFFIXES, read_image, write_image

from .models import PAD_MULTIPLE
from .synthesis import HazeConfig, synthesize, to_uint8

DEPTH_SUFFIXES = IMAGE_SUFFIXES | {".npy"}
HAZY_FOLDERS = ("hazy", "haze", "input", "inputs")
CLEAR_FOLDERS = ("clear", "gt", "GT", "clean", "target", "targets")
VAL_SEED_OFFSET = 1 << 40  # validation haze draws never coincide with a training sample's


class DataError(KanetError, ValueError):
    """Unusable training data (missing folders, unmatched names, unreadable images)."""


def list_images(folder: str | Path, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 float32 RGB in [0, 1] from an 8- or 16-bit image file (grey and alpha handled)."""
    image = read_image(path)
    if image is None:
        raise DataError(f"{path}: not a readable image")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image.astype(np.float32) / scale


def read_depth(path: str | Path) -> np.ndarray:
    """H x W float32 depth (larger is farther) from .npy or a single-channel image."""
    path = Path(path)
    depth = np.load(path) if path.suffix.lower() == ".npy" else read_image(path)
    if depth is None:
        raise DataError(f"{path}: not a readable depth map")
    return (depth if depth.ndim == 2 else depth[..., 0]).astype(np.float32)


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR))


def _subfolder(root: Path, names: tuple[str, ...], role: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no {role} folder (looked for {', '.join(names)})")


@dataclass(frozen=True)
class Source:
    """One training image: its clear file, and a real hazy file or a depth map if there is one."""

    clear: Path
    hazy: Path | None = None
    depth: Path | None = None


def paired_sources(root: str | Path) -> list[Source]:
    """Hazy/clear pairs under ROOT/hazy and ROOT/clear (or GT, ...), matched by `evaluation.pairing.pair_key`."""
    root = Path(root)
    hazy_dir, clear_dir = _subfolder(root, HAZY_FOLDERS, "hazy"), _subfolder(root, CLEAR_FOLDERS, "clear")
    clear_by_key: dict[str, Path] = {}
    for path in list_images(clear_dir):
        key = pair_key(path.stem)
        if key in clear_by_key:
            raise DataError(f"{clear_dir}: {clear_by_key[key].name} and {path.name} both match scene {key!r}")
        clear_by_key[key] = path
    sources, unmatched = [], []
    for path in list_images(hazy_dir):
        clear = clear_by_key.get(pair_key(path.stem))
        (sources.append(Source(clear, hazy=path)) if clear else unmatched.append(path.name))
    if unmatched:
        raise DataError(f"{hazy_dir}: {len(unmatched)} hazy image(s) have no clear match in {clear_dir}, "
                        f"e.g. {unmatched[:3]}")
    if not sources:
        raise DataError(f"{hazy_dir}: no images")
    return sources


def clear_sources(folder: str | Path, depth_dir: str | Path | None = None) -> list[Source]:
    """Clear images in FOLDER; a depth map with the same stem in `depth_dir` is used when present."""
    images = list_images(folder)
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    depths = {p.stem: p for p in list_images(depth_dir, DEPTH_SUFFIXES)} if depth_dir else {}
    return [Source(path, depth=depths.get(path.stem)) for path in images]


def split_sources(sources: list[Source], val_fraction: float, seed: int) -> tuple[list[Source], list[Source]]:
    """(train, val) split by scene, so hazy variants of one clear image never straddle the split.

    With a single scene there is nothing to hold out: validation reuses the training scene.
    """
    scenes = sorted({s.clear for s in sources})
    count = min(max(round(len(scenes) * val_fraction), 1 if val_fraction > 0 else 0), len(scenes) - 1)
    if count <= 0:
        return sources, sources
    held = {scenes[i] for i in np.random.default_rng([seed, 1]).permutation(len(scenes))[:count]}
    return [s for s in sources if s.clear not in held], [s for s in sources if s.clear in held]


def _load(source: Source) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    clear = read_rgb(source.clear)
    hazy = read_rgb(source.hazy) if source.hazy else None
    depth = read_depth(source.depth) if source.depth else None
    for name, other in (("hazy image", hazy), ("depth map", depth)):
        if other is not None and other.shape[:2] != clear.shape[:2]:
            raise DataError(f"{source.clear.name}: {name} is {other.shape[1]}x{other.shape[0]}, "
                            f"clear image is {clear.shape[1]}x{clear.shape[0]}")
    return clear, hazy, depth


def _resize(arrays: list[np.ndarray | None], scale: float) -> list[np.ndarray | None]:
    if scale == 1.0:
        return arrays
    return [None if a is None else cv2.resize(a, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1
                                              else cv2.INTER_CUBIC) for a in arrays]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class TrainingSet(Dataset):
    """Sample k -> (hazy, clear), both 3 x S x S float32 RGB in [0, 1].

    Image order: a fresh permutation of the sources each pass over them, drawn
    from (seed, pass). A source with a real hazy image uses it; one without gets
    haze synthesised on the crop (with its depth map when it has one).
    """

    def __init__(self, sources: list[Source], crop_size: int, seed: int, haze: HazeConfig,
                 scale_range: tuple[float, float] = (1.0, 1.0), hflip: bool = True, vflip: bool = False) -> None:
        if crop_size % PAD_MULTIPLE or crop_size < 48:
            raise DataError(f"crop size must be a multiple of {PAD_MULTIPLE} and at least 48 (KA-Net's smallest "
                            f"frame once padded), got {crop_size}")
        self.sources, self.crop, self.seed, self.haze = sources, crop_size, seed, haze
        self.scale_range, self.hflip, self.vflip = scale_range, hflip, vflip

    def source_index(self, k: int) -> int:
        n = len(self.sources)
        return int(np.random.default_rng([self.seed, 0, k // n]).permutation(n)[k % n])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 2, k])
        clear, hazy, depth = _load(self.sources[self.source_index(k)])
        height, width = clear.shape[:2]
        scale = max(float(rng.uniform(*self.scale_range)), self.crop / min(height, width))
        clear, hazy, depth = _resize([clear, hazy, depth], scale)
        height, width = clear.shape[:2]
        top, left = int(rng.integers(0, height - self.crop + 1)), int(rng.integers(0, width - self.crop + 1))
        window = (slice(top, top + self.crop), slice(left, left + self.crop))
        clear = clear[window]
        depth = None if depth is None else depth[window]
        hazy = synthesize(clear, rng, self.haze, depth)[0] if hazy is None else hazy[window]
        if self.hflip and rng.random() < 0.5:
            clear, hazy = clear[:, ::-1], hazy[:, ::-1]
        if self.vflip and rng.random() < 0.5:
            clear, hazy = clear[::-1], hazy[::-1]
        return to_tensor(hazy), to_tensor(clear)


def validation_samples(sources: list[Source], size: int, seed: int, haze: HazeConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed (hazy, clear) centre crops, at most `size` and a multiple of 16 per side; haze seeded per image.
    Every crop carries haze: haze-free samples teach restraint in training, but in validation they would score
    the checkpoint on copying its input instead of dehazing."""
    haze = replace(haze, haze_free_prob=0.0)
    samples = []
    for i, source in enumerate(sources):
        clear, hazy, depth = _load(source)
        height, width = clear.shape[:2]
        h, w = (min(size, height) // PAD_MULTIPLE * PAD_MULTIPLE, min(size, width) // PAD_MULTIPLE * PAD_MULTIPLE)
        if min(h, w) < 48:
            raise DataError(f"{source.clear}: {width}x{height} is too small to validate on (48 x 48 at least)")
        window = (slice((height - h) // 2, (height - h) // 2 + h), slice((width - w) // 2, (width - w) // 2 + w))
        clear = clear[window]
        if hazy is None:
            hazy = synthesize(clear, np.random.default_rng([seed, 3, VAL_SEED_OFFSET + i]), haze,
                              None if depth is None else depth[window])[0]
        else:
            hazy = hazy[window]
        samples.append((to_tensor(hazy), to_tensor(clear)))
    return samples
