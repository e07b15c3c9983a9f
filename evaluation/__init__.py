"""Image quality, not speed: scores, baselines and pictures for dehazing outputs. Never imports torch.

| module | job |
| --- | --- |
| `pairing.py` | which files show the same scene (`pair_key`): how `kanet train` and `kanet eval` match hazy and clear |
| `dcp.py` | the dark channel prior: the classic baseline, and the transmission and airlight estimates the scores use |
| `quality.py` | full-reference (PSNR, SSIM, CIEDE2000) and no-reference (haze density, contrast, colour) scores |
| `evaluate.py` | every method on the same frames -> a report, a Markdown table (`kanet eval`, `kanet demo`) |
| `haze_stats.py` | statistics that characterise haze, to calibrate synthetic haze against real photographs |
| `sheet.py` | labelled images and the contact sheet (`kanet demo`, `kanet synth`) |
"""
