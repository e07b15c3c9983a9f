"""Clear colour photographs that ship inside installed packages (nothing is downloaded).

The project's own checkpoint was trained on these with synthesised haze; one is held out for
the synthetic evaluation set. They are few, which the model card says.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import skimage

_SKIMAGE = Path(skimage.__file__).parent / "data"
_MATPLOTLIB = Path(matplotlib.get_data_path()) / "sample_data"

# name -> file; natural colour photographs only (no micrographs, charts or greyscale textures)
BUNDLED = {
    "astronaut": _SKIMAGE / "astronaut.png",
    "chelsea": _SKIMAGE / "chelsea.png",
    "coffee": _SKIMAGE / "coffee.png",
    "motorcycle": _SKIMAGE / "motorcycle_left.png",
    "grace_hopper": _MATPLOTLIB / "grace_hopper.jpg",
    "rocket": _SKIMAGE / "rocket.jpg",
}
HELD_OUT = ("rocket",)  # the only outdoor landscape: kept for the synthetic evaluation set


def copy_bundled(out_dir: str | Path, held_out: bool = False) -> list[Path]:
    """Copy the training images (or, with held_out=True, the held-out ones) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n in BUNDLED if (n in HELD_OUT) == held_out]
    missing = [str(BUNDLED[n]) for n in names if not BUNDLED[n].is_file()]
    if missing:
        raise FileNotFoundError(f"bundled images missing from the installed packages: {', '.join(missing)}")
    return [Path(shutil.copyfile(BUNDLED[n], out_dir / f"{n}{BUNDLED[n].suffix}")) for n in names]
