"""Checkpoint -> ONNX -> FP16 ONNX -> TensorRT / TensorRT-RTX engine + manifest."""
from .errors import ExportError

__all__ = ["ExportError"]
