"""A synthetic paired set on disk (what `kanet synth` writes), for inspection or `--paired-dir` training."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from evaluation.sheet import contact_sheet
from runtime.imagefile import write_image
from runtime.progress import progress as progress_bar

from .data import Source, read_depth, read_rgb, write_rgb
from .synthesis import HazeConfig, synthesize, to_uint8

SHEET_PAIRS = 12  # pairs shown on the contact sheet
SHEET_COLUMNS = 3  # pairs per line
THUMB = 160  # height of an image on the sheet


def _square_crop(image: np.ndarray, depth: np.ndarray | None, size: int, rng: np.random.Generator):
    """Scale so the short side is 1-1.25 x `size`, then a random size x size crop (same window for depth)."""
    height, width = image.shape[:2]
    scale = size / min(height, width) * float(rng.uniform(1.0, 1.25))
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    depth = None if depth is None else cv2.resize(depth, (new_w, new_h), interpolation=interp)
    top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
    window = (slice(top, top + size), slice(left, left + size))
    return image[window], None if depth is None else depth[window], {"scale": round(scale, 4), "top": top, "left": left}


def write_synthetic_set(sources: list[Source], out: str | Path, count: int, size: int, seed: int,
                        config: HazeConfig, progress: bool | None = None) -> list[dict]:
    """OUT/hazy/NAME.png, OUT/clear/NAME.png, OUT/params.jsonl (one line per pair) and OUT/contact_sheet.png.

    Pair i uses source i mod len(sources) and `np.random.default_rng([seed, i])`.
    """
    out = Path(out)
    records, cells = [], []  # cells: (8-bit RGB image, label), clear then hazy, pair after pair
    out.mkdir(parents=True, exist_ok=True)
    with (out / "params.jsonl").open("w") as lines, progress_bar(count, progress, "synth",
                                                                "pair") as bar:
        for i in range(count):
            source = sources[i % len(sources)]
            rng = np.random.default_rng([seed, i])
            depth = read_depth(source.depth) if source.depth else None
            clear, depth, crop = _square_crop(read_rgb(source.clear), depth, size, rng)
            hazy, params = synthesize(clear, rng, config, depth)
            name = f"{i:05d}_{source.clear.stem}.png"
            write_rgb(out / "hazy" / name, hazy)
            write_rgb(out / "clear" / name, clear)
            record = {"name": name, "source": str(source.clear), "crop": crop, **params}
            lines.write(json.dumps(record) + "\n")
            records.append(record)
            if len(cells) < 2 * SHEET_PAIRS:
                cells += [(to_uint8(clear), f"{name[:5]} clear"),
                          (to_uint8(hazy), f"{name[:5]} beta {params['beta']:.2f}")]
            bar.update(1)
    per_line = 2 * SHEET_COLUMNS
    sheet = contact_sheet([cells[i:i + per_line] for i in range(0, len(cells), per_line)], height=THUMB)
    write_image(out / "contact_sheet.png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return records
