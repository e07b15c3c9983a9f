"""What the network does to photographs that hold no haze: PSNR of its output against the input, and kanet eval's
colour shift (mean a*b* change where the input's DCP transmission is highest), beside the dark channel prior's.
Run from the repository root: clear_input_probe.py WEIGHTS FOLDER [MAX_SIDE]"""
import glob
import sys

import cv2
import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from evaluation.dcp import dehaze_dcp
from evaluation.quality import NearRegion, colour_shift
from export.wrappers import FrameIO
from runtime.images import fit_long_side
from training.checkpoint import load_checkpoint

torch.set_num_threads(2)
frame_model = FrameIO(load_checkpoint(sys.argv[1])).eval()  # uint8 BGR in and out, as the exported graph
side = int(sys.argv[3]) if len(sys.argv) > 3 else 512
rows = {"net": [], "dcp": []}
for path in sorted(glob.glob(sys.argv[2] + "/*")):
    image = cv2.imread(path)
    if image is None:
        continue
    image = fit_long_side(image, side)
    near = NearRegion(image)
    with torch.no_grad():
        outputs = {"net": frame_model(torch.from_numpy(image[None]))[0].numpy(), "dcp": dehaze_dcp(image)}
    for name, out in outputs.items():
        rows[name].append((peak_signal_noise_ratio(image, out), colour_shift(out, near)))
for name, values in rows.items():
    values = np.array(values)
    print(f"{name}: PSNR against the clear input {values[:, 0].mean():.2f} dB, colour shift {values[:, 1].mean():.2f} "
          f"(n={len(values)})")
