"""Lean KA-Net runtime: engines and ONNX models on frames and streams. Never imports torch."""
from .dehazer import Dehazer
from .errors import DehazeError

__all__ = ["Dehazer", "DehazeError"]
