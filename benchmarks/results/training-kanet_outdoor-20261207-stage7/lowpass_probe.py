"""How much of the colour shift on haze-free photographs is low-frequency: kanet eval's colour shift (mean a*b* change
where the input's DCP transmission is highest) on the full images, and again with output and input both Gaussian-blurred
(sigma 2), beside the dark channel prior's. Run from the repository root: lowpass_probe.py WEIGHTS FOLDER [COUNT]"""
import glob
import sys

import cv2
import numpy as np
import torch

from evaluation.dcp import dehaze_dcp
from evaluation.quality import NearRegion, _lab, colour_shift
from export.wrappers import FrameIO
from runtime.images import fit_long_side
from training.checkpoint import load_checkpoint

torch.set_num_threads(1)
frame_model = FrameIO(load_checkpoint(sys.argv[1])).eval()  # uint8 BGR in and out, as the exported graph
count = int(sys.argv[3]) if len(sys.argv) > 3 else 30


def blur(image):
    return cv2.GaussianBlur(image, (0, 0), 2)


rows = []
for path in sorted(glob.glob(sys.argv[2] + "/*"))[:count]:
    image = cv2.imread(path)
    if image is None:
        continue
    image = fit_long_side(image, 512)
    near = NearRegion(image)
    blurred_input = _lab(blur(image))[near.mask][:, 1:]

    def low_pass_shift(out):
        delta = _lab(blur(out))[near.mask][:, 1:] - blurred_input
        return np.hypot(delta[:, 0], delta[:, 1]).mean()

    with torch.no_grad():
        net = frame_model(torch.from_numpy(image[None]))[0].numpy()
    dcp = dehaze_dcp(image)
    rows.append([colour_shift(net, near), low_pass_shift(net), colour_shift(dcp, near), low_pass_shift(dcp)])
net, net_low, dcp, dcp_low = np.mean(rows, 0)
print(f"net: colour shift {net:.2f}, low-pass {net_low:.2f}; dcp: {dcp:.2f}, low-pass {dcp_low:.2f} (n={len(rows)})")
