"""Lean KA-Net runtime: engines and ONNX models on frames and streams. Never imports torch."""
from .dehazer import Dehazer
from .errors import DehazeError
from .openvino_backend import OpenVinoOptions

__all__ = ["Dehazer", "DehazeError", "OpenVinoOptions"]
