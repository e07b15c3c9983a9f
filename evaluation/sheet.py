"""Pictures to look at: labelled images side by side and the contact sheet, on uint8 frames (3 channels, any order)."""
from __future__ import annotations

import cv2
import numpy as np

Cell = tuple[np.ndarray, str]  # an image and its label


def label(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of `image` with `text` in white on a black box in its top-left corner."""
    out = image.copy()
    cv2.rectangle(out, (0, 0), (8 + 9 * len(text), 22), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def labelled_row(cells: list[Cell]) -> np.ndarray:
    """The images side by side, each labelled (they must share a height)."""
    return cv2.hconcat([label(image, text) for image, text in cells])


def contact_sheet(rows: list[list[Cell]], height: int = 200) -> np.ndarray:
    """One line per row of cells, every image scaled to `height`; shorter lines are padded on the right."""
    lines = [labelled_row([(cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height),
                                       interpolation=cv2.INTER_AREA), text) for image, text in cells])
             for cells in rows]
    width = max(line.shape[1] for line in lines)
    return cv2.vconcat([cv2.copyMakeBorder(line, 0, 4, 0, width - line.shape[1], cv2.BORDER_CONSTANT)
                        for line in lines])
