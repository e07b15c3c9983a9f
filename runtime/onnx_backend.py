"""A frame-I/O ONNX model on ONNX Runtime with the best provider installed: TensorRT EP, CUDA EP, then CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .backend import HostBackend
from .errors import DehazeError

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PREFERRED[:2]


def model_precision(model: onnx.ModelProto) -> str:
    """'fp16' when any weight is stored in half precision (the mixed FP16 export), else 'fp32'."""
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return "fp16" if half else "fp32"


def onnx_precision(path: Path) -> str:
    return model_precision(onnx.load(str(path), load_external_data=False))


class OnnxBackend(HostBackend):
    def __init__(self, path: Path, device: int | None = 0, threads: int | None = None) -> None:
        """device: the GPU for the GPU providers; None keeps to the CPU. threads: the CPU provider's intra-op
        threads (None: one per physical core), so workers sharing a machine do not oversubscribe it."""
        available = ort.get_available_providers()
        preferred = PREFERRED if device is not None else ("CPUExecutionProvider",)
        providers = [(p, {"device_id": device}) if p in GPU_PROVIDERS else p for p in preferred if p in available]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types for unreadable models
            raise DehazeError(f"{path}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0]})") from None
        (inp,), (out,) = self._session.get_inputs(), self._session.get_outputs()
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4 or inp.shape[-1] != 3:
            raise DehazeError(f"{path}: input {inp.name} is {inp.type} {inp.shape}, not uint8 N x H x W x 3 frames "
                              "(a tensor-I/O export, for analysis?); export a frame-I/O model for the runtime: "
                              "kanet export CKPT --out DIR (default --io frames)")
        self._in, self._out = inp.name, out.name
        self.name = f"onnxruntime:{self._session.get_providers()[0]}"
        self.precision = onnx_precision(path)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._out], {self._in: batch})[0]

    def close(self) -> None:
        self._session = None
