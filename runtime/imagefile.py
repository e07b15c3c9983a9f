"""Image files in and out: the one way the project reads and writes them.

Bytes go through Python and OpenCV only decodes and encodes buffers: cv2.imread and cv2.imwrite
crash (segfault) on a file name that is not valid UTF-8, which any Linux folder may hold.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .atomic import write_bytes
from .errors import DehazeError

# What counts as an image file everywhere (run, eval, training): the formats OpenCV decodes in every build.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jp2"}


def read_image(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """The decoded image; None when the file is missing, unreadable or not an image."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        return cv2.imdecode(data, flags)
    except cv2.error:
        return None


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Encode by the file's suffix and write it atomically (runtime.atomic)."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise DehazeError(f"{path}: cannot encode the image as {path.suffix or 'an image (no suffix)'}")
    write_bytes(path, data.tobytes())
