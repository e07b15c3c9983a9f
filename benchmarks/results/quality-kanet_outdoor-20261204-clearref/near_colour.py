"""Signed near-region colour change (a*, b*, chroma, L*) of each method against the hazy input, beside the
clear image's own change: run after `kanet eval ... --save-images --out OUT` on a paired set.

    python near_colour.py ../shared/data/paired/hsts_synthetic OUT
"""
import sys
from pathlib import Path

import cv2
import numpy as np

from evaluation.evaluate import find_reference, list_images, scene_index
from evaluation.quality import NearRegion, _lab
from runtime.imagefile import read_image
from runtime.images import fit_long_side

paired, out = Path(sys.argv[1]), Path(sys.argv[2])
index = scene_index(paired / "clear")
changes: dict[str, list] = {"clear reference": [], "KA-Net": [], "dark channel prior": []}
for path in list_images(paired / "hazy"):
    hazy = fit_long_side(read_image(path)[..., :3], 1024)
    frames = {"clear reference": read_image(find_reference(path.name, index))[..., :3]}
    for method in ("KA-Net", "dark channel prior"):
        frames[method] = read_image(next((out / method).glob(path.stem + ".*")))[..., :3]
    near = NearRegion(hazy)
    before = _lab(hazy)[near.mask]
    for method, frame in frames.items():
        frame = cv2.resize(frame, hazy.shape[1::-1], interpolation=cv2.INTER_AREA)
        after = _lab(frame)[near.mask]
        chroma = np.hypot(after[:, 1], after[:, 2]).mean() - np.hypot(before[:, 1], before[:, 2]).mean()
        changes[method].append([*(after - before)[:, [1, 2]].mean(0), chroma, (after - before)[:, 0].mean()])
print("| method | Δa* | Δb* | Δchroma | ΔL* |\n| --- | ---: | ---: | ---: | ---: |")
for method, rows in changes.items():
    a, b, c, lum = np.mean(rows, axis=0)
    print(f"| {method} | {a:+.2f} | {b:+.2f} | {c:+.2f} | {lum:+.2f} |")
