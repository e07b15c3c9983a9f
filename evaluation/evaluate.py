"""Score dehazing methods side by side on a folder of hazy images (and clear references if any).

A method is a function from a uint8 BGR frame to a uint8 BGR frame: the hazy input itself
(the do-nothing baseline), the dark channel prior, a KA-Net model through the runtime, or
outputs another tool wrote to a folder. Every method sees the same frames, so the table
compares like with like.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from evaluation.pairing import pair_key
from evaluation.quality import FULL_REFERENCE, NO_REFERENCE, NearRegion, full_reference_scores, no_reference_scores
from runtime.errors import KanetError
from runtime.images import fit_long_side
from runtime.imagefile import IMAGE_SUFFIXES, read_image, write_image

Method = Callable[[np.ndarray, str], np.ndarray]  # (hazy frame, image name) -> output frame
# With references, the clear image's own no-reference scores are reported as a row: what a perfect
# dehazer would score, so colour shift or haze density can be read against the truth, not against 0.
CLEAR_REFERENCE = "clear reference"


class EvalError(KanetError):
    """Bad evaluation input (missing folder, unreadable references); names the path."""


@dataclass
class EvalReport:
    images: list[dict] = field(default_factory=list)   # {"name", "method", scores...}
    skipped: list[dict] = field(default_factory=list)  # {"name", "reason"}
    seconds: dict[str, float] = field(default_factory=dict)

    def means(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for method in dict.fromkeys(r["method"] for r in self.images):
            rows = [r for r in self.images if r["method"] == method]
            keys = [k for k in (*FULL_REFERENCE, *NO_REFERENCE) if k in rows[0]]
            out[method] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        return out

    def to_json(self) -> dict:
        return {"means": self.means(), "images": self.images, "skipped": self.skipped,
                "seconds_per_image": {m: s / max(1, self.count(m)) for m, s in self.seconds.items()}}

    def why_none_scored(self) -> str:
        """Why no image was scored: the skip reasons, each with the images it hit."""
        by_reason: dict[str, list[str]] = {}
        for s in self.skipped:
            by_reason.setdefault(s["reason"], []).append(s["name"])
        if not by_reason:
            return "no hazy image was selected"
        return "; ".join(f"{reason}: {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
                         for reason, names in by_reason.items())

    def count(self, method: str) -> int:
        return sum(r["method"] == method for r in self.images)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise EvalError(f"{folder}: no such folder")
    files = _images(folder)
    if not files:
        raise EvalError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _scene(name: str) -> str:
    return pair_key(Path(name).stem)


def scene_index(folder: Path) -> dict[str, Path]:
    """The images in folder by scene, matched as `kanet train` pairs them (evaluation.pairing.pair_key)."""
    index: dict[str, Path] = {}
    for path in _images(folder):
        index.setdefault(_scene(path.name), path)
    return index


def find_reference(name: str, index: dict[str, Path]) -> Path | None:
    """The image in `index` showing the scene of `name`: `0001_0.8_0.2.jpg` -> `0001.png` (RESIDE),
    `01_hazy` -> `01_GT` (NH-HAZE), or simply the same stem."""
    return index.get(_scene(name))


def folder_method(folder: Path) -> Method:
    """Outputs written by another tool: looked up by the hazy image's scene."""
    index = scene_index(folder)

    def load(hazy: np.ndarray, name: str) -> np.ndarray:
        path = find_reference(name, index)
        image = read_image(path, cv2.IMREAD_COLOR) if path else None
        if image is None:
            raise EvalError(f"{folder}: no readable output for {name}")
        return cv2.resize(image, hazy.shape[1::-1], interpolation=cv2.INTER_AREA) \
            if image.shape != hazy.shape else image
    return load


def evaluate(hazy_dir: Path, methods: dict[str, Method], clear_dir: Path | None = None,
             save_dir: Path | None = None, max_side: int | None = None,
             progress: Callable[[], None] | None = None, names: Iterable[str] | None = None) -> EvalReport:
    """Run every method on every readable hazy image; unreadable images are skipped and listed."""
    report = EvalReport()
    files = list_images(hazy_dir)
    if names is not None:
        wanted = set(names)
        files = [f for f in files if f.name in wanted]
    if clear_dir is not None and not clear_dir.is_dir():
        raise EvalError(f"{clear_dir}: no such folder")
    references = scene_index(clear_dir) if clear_dir is not None else {}
    for path in files:
        hazy, reference, reason = read_image(path, cv2.IMREAD_COLOR), None, None
        if hazy is None:
            reason = "not a readable image"
        elif clear_dir is not None:
            ref_path = find_reference(path.name, references)
            reference = read_image(ref_path, cv2.IMREAD_COLOR) if ref_path else None
            if reference is None:
                reason = f"no readable clear image in {clear_dir}"
        if reason:
            report.skipped.append({"name": path.name, "reason": reason})
            if progress:
                progress()
            continue
        if reference is not None and reference.shape != hazy.shape:
            reference = cv2.resize(reference, hazy.shape[1::-1], interpolation=cv2.INTER_AREA)
        hazy = fit_long_side(hazy, max_side)
        if reference is not None:
            reference = fit_long_side(reference, max_side)
        near = NearRegion(hazy)
        for method, fn in methods.items():
            start = time.perf_counter()
            output = fn(hazy, path.name)
            report.seconds[method] = report.seconds.get(method, 0.0) + time.perf_counter() - start
            row = {"name": path.name, "method": method, **no_reference_scores(output, near)}
            if reference is not None:
                row.update(full_reference_scores(output, reference))
            report.images.append(row)
            if save_dir is not None:
                (save_dir / method).mkdir(parents=True, exist_ok=True)
                write_image(save_dir / method / (path.stem + ".png"), output)
        if reference is not None:
            report.images.append({"name": path.name, "method": CLEAR_REFERENCE, **no_reference_scores(reference, near)})
        if progress:
            progress()
    return report


def markdown_table(report: EvalReport, title: str) -> str:
    means = report.means()
    if not means:
        return f"## {title}\n\nNo image could be scored: {report.why_none_scored()}.\n"
    keys = [k for k in (*FULL_REFERENCE, *NO_REFERENCE) if k in next(iter(means.values()))]
    arrows = {"psnr_db": "PSNR dB ↑", "ssim": "SSIM ↑", "ciede2000": "CIEDE2000 ↓",
              "haze_density": "haze density ↓", "local_contrast": "local contrast ↑",
              "colourfulness": "colourfulness", "colour_shift": "colour shift ↓"}
    decimals = {"psnr_db": 2, "ciede2000": 2, "colourfulness": 1, "colour_shift": 2}
    per_image = report.to_json()["seconds_per_image"]
    lines = [f"## {title}", "", f"{report.count(next(iter(means)))} images; mean over images.", "",
             "| method | " + " | ".join(arrows[k] for k in keys) + " | s / image |",
             "| --- |" + " ---: |" * (len(keys) + 1)]
    for method, scores in means.items():
        cells = [f"{scores[k]:.{decimals.get(k, 4)}f}" if k in scores else "—" for k in keys]
        seconds = f"{per_image[method]:.3f}" if method in per_image else "—"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {seconds} |")
    lines += ["", "Haze density, local contrast and colourfulness reward over-processing (a colour cast or "
              "crushed shadows look 'clearer'): read them beside colour shift (a*, b* change where the "
              "input is least hazy) and, with references, CIEDE2000; they are not a ranking on their own."]
    if CLEAR_REFERENCE in means:
        lines[-1] += f" The '{CLEAR_REFERENCE}' row scores the clear image itself: what a perfect result would score."
    if report.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s['name']} ({s['reason']})" for s in report.skipped)]
    return "\n".join(lines) + "\n"
