"""Signed a*, b* and chroma change of the model's and DCP's outputs where real hazy photographs are least hazy
(kanet eval's colour-shift region). Run from the repository root: colour_probe.py WEIGHTS [MAX_SIDE [FOLDER ...]]"""
import sys, glob
import numpy as np, torch, cv2
from export.wrappers import FrameIO
from training.checkpoint import load_checkpoint
from runtime.images import fit_long_side
from evaluation.quality import NearRegion, _lab
from evaluation.dcp import dehaze_dcp

torch.set_num_threads(2)
model = load_checkpoint(sys.argv[1])
side = int(sys.argv[2]) if len(sys.argv) > 2 else 512

frame_model = FrameIO(model).eval()  # uint8 BGR in and out, as the exported graph


def run(bgr):
    with torch.no_grad():
        return frame_model(torch.from_numpy(bgr[None]))[0].numpy()

def stats(out, near):
    lab = _lab(out)[near.mask]
    d = lab[:, 1:] - near.chroma
    c_in = np.hypot(near.chroma[:, 0], near.chroma[:, 1]); c_out = np.hypot(lab[:, 1], lab[:, 2])
    return np.hypot(d[:, 0], d[:, 1]).mean(), d[:, 0].mean(), d[:, 1].mean(), (c_out - c_in).mean()

for folder in sys.argv[3:] or ["../shared/data/real_hazy", "../shared/data/real_hazy_more/ridcp", "../shared/data/real_hazy_more/web"]:
    rows = {"net": [], "dcp": []}
    for p in sorted(glob.glob(folder + "/*")):
        img = cv2.imread(p)
        if img is None: continue
        img = fit_long_side(img, side)
        near = NearRegion(img)
        rows["net"].append(stats(run(img), near)); rows["dcp"].append(stats(dehaze_dcp(img), near))
    for k, v in rows.items():
        v = np.array(v)
        print(f"{folder.split('/')[-1]:8s} {k}: shift {v[:,0].mean():.2f}  da {v[:,1].mean():+.2f}  db {v[:,2].mean():+.2f}  dchroma {v[:,3].mean():+.2f}  (n={len(v)})", flush=True)
