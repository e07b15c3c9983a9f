"""Frames in the form the models take: uint8 H x W x 3 BGR, converted from what images commonly are."""
from __future__ import annotations

import logging

import cv2
import numpy as np

from .errors import DehazeError

log = logging.getLogger("runtime")
_noted: set[str] = set()


def _note_once(message: str) -> None:
    """One line per kind of conversion, not one per frame of a video."""
    if message not in _noted:
        _noted.add(message)
        log.warning(message)


def as_bgr8(image: np.ndarray, what: str = "frame") -> np.ndarray:
    """uint8 H x W x 3 BGR; grayscale, BGRA and 16-bit images are converted, with a one-line warning."""
    if not isinstance(image, np.ndarray):
        raise DehazeError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        _note_once("16-bit frames are converted to 8 bits")
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DehazeError(f"{what}: expected uint8 (or 16-bit) pixels, got {image.dtype}; "
                          "scale to 0..255 and convert with .astype(np.uint8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        _note_once("grayscale frames are converted to BGR")
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DehazeError(f"{what}: expected H x W x 3 BGR (or gray / BGRA), got shape {image.shape}")
    if image.shape[2] == 4:
        _note_once("BGRA frames are converted to BGR (alpha dropped)")
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def as_batch(frames: np.ndarray) -> tuple[np.ndarray, bool]:
    """(N x H x W x 3 uint8 batch, whether the input was a single frame)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        if frames.shape[-1] == 3 and frames.dtype == np.uint8:
            return np.ascontiguousarray(frames), False
        return np.stack([as_bgr8(frame, "batch frame") for frame in frames]), False
    return as_bgr8(frames)[None], True


def fit_long_side(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """`frame` shrunk (area interpolation) so its long side is at most `max_side`; as it is when it fits."""
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 sizes are (width, height)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
