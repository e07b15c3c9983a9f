"""Frames larger than a model accepts, processed as overlapping tiles cross-faded into one frame.

Adjacent tiles overlap by at least `overlap` pixels; inside an overlap the two outputs are
blended with linear weights that go from 1 to 0 across it, so there is no hard edge (seam)
where a tile's border effects (its own reflect padding) would show.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .errors import DehazeError


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread start offsets of tiles of size `tile` covering `length`, overlapping by >= `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(starts: list[int], tile: int, index: int) -> np.ndarray:
    """1-D weights of tile `index`: linear fades across its overlaps with the previous and next tile."""
    weight = np.ones(tile, np.float32)
    start = starts[index]
    if index > 0:
        fade = starts[index - 1] + tile - start
        weight[:fade] = np.minimum(weight[:fade], (np.arange(fade) + 0.5) / fade)
    if index + 1 < len(starts):
        fade = start + tile - starts[index + 1]
        weight[tile - fade:] = np.minimum(weight[tile - fade:], (np.arange(fade)[::-1] + 0.5) / fade)
    return weight


def run_tiled(batch: np.ndarray, tile: tuple[int, int], overlap: int, max_batch: int | None,
              infer: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Dehaze N x H x W x 3 uint8 frames through `infer` in tiles of at most `tile` (height, width)."""
    n, height, width, _ = batch.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    if (th < height and overlap >= th) or (tw < width and overlap >= tw):
        raise DehazeError(f"tile overlap {overlap} must be smaller than the tile {th}x{tw}")
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    origins = [(f, y, x) for f in range(n) for y in ys for x in xs]
    tiles = np.stack([batch[f, y:y + th, x:x + tw] for f, y, x in origins])
    chunk = max_batch or len(tiles)
    outputs = np.concatenate([infer(tiles[i:i + chunk]) for i in range(0, len(tiles), chunk)])

    wy = {y: _ramp(ys, th, i) for i, y in enumerate(ys)}
    wx = {x: _ramp(xs, tw, i) for i, x in enumerate(xs)}
    total = np.zeros((n, height, width, 3), np.float32)
    weights = np.zeros((n, height, width, 1), np.float32)
    for (f, y, x), out in zip(origins, outputs):
        w = (wy[y][:, None] * wx[x][None, :])[:, :, None]
        total[f, y:y + th, x:x + tw] += out * w
        weights[f, y:y + th, x:x + tw] += w
    return np.clip(np.rint(total / weights), 0, 255).astype(np.uint8)
