"""Where kanet eval's colour shift comes from, for the network and DCP, where real hazy photographs are least hazy
(its near region): the per-image mean a*b* change (a cast), the shift left after a Gaussian blur of input and
output (sigma 1 px: what pixel-scale changes such as removed noise or JPEG artefacts add), the pixel-scale
chroma detail (a*b* minus its sigma-1 blur) of input and output, and how that detail in the output follows the
input's (correlation of L*, a* and b* detail, input against output).
Run from the repository root: fine_scale_probe.py WEIGHTS [MAX_SIDE]"""
import glob
import sys

import cv2
import numpy as np
import torch

from evaluation.dcp import dehaze_dcp
from evaluation.quality import NearRegion, _lab
from export.wrappers import FrameIO
from runtime.images import fit_long_side
from training.checkpoint import load_checkpoint

torch.set_num_threads(2)
frame_model = FrameIO(load_checkpoint(sys.argv[1])).eval()  # uint8 BGR in and out, as the exported graph
side = int(sys.argv[2]) if len(sys.argv) > 2 else 512


def scores(out, hazy, mask):
    lab_in, lab_out = (_lab(img).astype(np.float32) for img in (hazy, out))
    blur = lambda lab: cv2.GaussianBlur(lab, (0, 0), 1.0)
    high_in, high_out = (lab - blur(lab) for lab in (lab_in, lab_out))  # pixel-scale detail, L* a* b*
    delta = (lab_out - lab_in)[mask][:, 1:]
    blurred = (blur(lab_out) - blur(lab_in))[mask][:, 1:]
    detail = lambda high: np.hypot(*high[mask][:, 1:].T).mean()
    follows = [np.corrcoef(high_in[mask][:, c], high_out[mask][:, c])[0, 1] for c in range(3)]
    return [np.hypot(*delta.T).mean(), np.hypot(*delta.mean(0)), np.hypot(*blurred.T).mean(), detail(high_in),
            detail(high_out), *follows]

for folder in ["../shared/data/real_hazy", "../shared/data/real_hazy_more/ridcp", "../shared/data/real_hazy_more/web"]:
    rows = {"network": [], "DCP": []}
    for path in sorted(glob.glob(folder + "/*")):
        hazy = cv2.imread(path)
        if hazy is None:
            continue
        hazy = fit_long_side(hazy, side)
        mask = NearRegion(hazy).mask
        with torch.no_grad():
            out = frame_model(torch.from_numpy(hazy[None]))[0].numpy()
        rows["network"].append(scores(out, hazy, mask))
        rows["DCP"].append(scores(dehaze_dcp(hazy), hazy, mask))
    for name, values in rows.items():
        v = np.nanmean(np.array(values), 0)  # a flat near region has no detail to correlate
        print(f"{folder.split('/')[-1]:9s} {name:7s}: colour shift {v[0]:.2f}  cast {v[1]:.2f}  after 1 px blur {v[2]:.2f}"
              f"  pixel-scale chroma detail in {v[3]:.2f} out {v[4]:.2f}  follows the input's: L* {v[5]:.2f}"
              f" a* {v[6]:.2f} b* {v[7]:.2f}  (n={len(values)})", flush=True)
