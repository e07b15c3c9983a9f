"""Signed global bias of outputs against the clear images of paired sets: per-channel mean (R, G, B, 0-255) and
L*, a*, b* means. Run from the repository root: bias_probe.py WEIGHTS SET [SET ...] (folders of ../shared/data/paired)"""
import sys, glob, os
import numpy as np, torch, cv2
from export.wrappers import FrameIO
from training.checkpoint import load_checkpoint
from runtime.images import fit_long_side
from evaluation.quality import _lab
from evaluation.dcp import dehaze_dcp
from evaluation.pairing import pair_key
torch.set_num_threads(2)
model = load_checkpoint(sys.argv[1])
frame_model = FrameIO(model).eval()  # uint8 BGR in and out, as the exported graph


def run(bgr):
    with torch.no_grad():
        return frame_model(torch.from_numpy(bgr[None]))[0].numpy()
for s in sys.argv[2:]:
    root = f"../shared/data/paired/{s}"
    clears = {pair_key(os.path.splitext(os.path.basename(p))[0]): p for p in glob.glob(root + "/clear/*")}
    for name, fn in (("net", run), ("dcp", dehaze_dcp), ("hazy", lambda x: x)):
        rows = []
        for p in sorted(glob.glob(root + "/hazy/*")):
            c = clears.get(pair_key(os.path.splitext(os.path.basename(p))[0]))
            h = fit_long_side(cv2.imread(p), 1024); c = fit_long_side(cv2.imread(c), 1024)
            c = cv2.resize(c, (h.shape[1], h.shape[0])) if c.shape != h.shape else c
            o = fn(h).astype(np.float64)
            d = (o - c).reshape(-1, 3).mean(0)[::-1]
            lo, lc = _lab(o.astype(np.uint8)), _lab(c)
            rows.append([*d, *(lo - lc).reshape(-1, 3).mean(0)])
        r = np.mean(rows, 0)
        print(f"{s:14s} {name:4s} dR {r[0]:+6.1f} dG {r[1]:+6.1f} dB {r[2]:+6.1f}  dL {r[3]:+5.1f} da {r[4]:+5.2f} db {r[5]:+5.2f}", flush=True)
