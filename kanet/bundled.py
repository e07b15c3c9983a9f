"""Files that come with the project, found through this module's location, never the working folder.

The sample photographs are package data (pyproject.toml), so every install carries them. The project's
checkpoint is not: at 112 MB it is over PyPI's 100 MB file limit, so it is found in a checkout (an
editable install) only.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SAMPLES = PACKAGE / "samples"
CLIP_PHOTO = SAMPLES / "cones.png"  # a real hazy photograph that `kanet bench`'s video clip pans across
DEFAULT_CHECKPOINT = PACKAGE.parent / "weights" / "kanet_outdoor.pt"
