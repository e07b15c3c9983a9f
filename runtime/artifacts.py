"""The names of what `kanet export` writes and the frame-size limit of the network, in one torch-free place.

Exporters write these files, the runtime, benchmarks and the demo find them here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# KA-Net pads frames to a multiple of 16, and its stride-32 intra-patch block reduces keys by 2 more,
# so the padded frame must be at least 48 px: frames from 33 px up pad to that.
MIN_FRAME_SIZE = 33
PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class ExportFolder:
    """A `kanet export` output folder and the paths of the files in it."""
    path: Path

    @property
    def fp32_onnx(self) -> Path:
        """The FP32 frame-I/O model (its attention as com.microsoft.MultiHeadAttention: ONNX Runtime, OpenVINO)."""
        return self.path / "kanet_fp32.onnx"

    @property
    def fp16_onnx(self) -> Path:
        """The mixed-precision FP16 model for ONNX Runtime (MultiHeadAttention; its CUDA provider)."""
        return self.path / "kanet_fp16.onnx"

    def engine_source(self, precision: str) -> Path:
        """What an engine of `precision` is built from: attention in the forms TensorRT builds (FP16 always
        written; FP32 with an FP32 engine)."""
        return self.path / f"kanet_{precision}_tensorrt.onnx"

    @property
    def record(self) -> Path:
        """export.json: what was exported from which checkpoint, each FP32-kept node and why."""
        return self.path / "export.json"

    def engine(self, precision: str) -> Path:
        return self.path / f"kanet_{precision}.plan"

    def engines(self) -> list[Path]:
        """The engines the folder holds, FP16 first."""
        return [p for p in (self.engine(precision) for precision in PRECISIONS) if p.is_file()]
