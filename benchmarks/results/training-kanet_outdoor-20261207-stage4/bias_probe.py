"""Signed global bias of outputs vs clear on paired sets: per-channel mean (R,G,B x255) and Lab a*, b* means."""
import sys, glob, os
import numpy as np, torch, cv2
from training.checkpoint import load_checkpoint
from runtime.images import fit_long_side
from evaluation.quality import _lab
from evaluation.dcp import dehaze_dcp
from evaluation.pairing import pair_key
torch.set_num_threads(2)
model = load_checkpoint(sys.argv[1])
def run(bgr):
    x = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = model.dehaze(x * 2 - 1).clamp(0, 1)
    return (y[0].permute(1, 2, 0).numpy()[..., ::-1] * 255 + 0.5).astype(np.uint8)
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
