"""Lean KA-Net runtime: engines and ONNX models on frames and streams. Never imports torch."""
