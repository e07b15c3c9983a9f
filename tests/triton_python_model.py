"""model.py of a Triton Python-back-end model that runs `model.onnx` beside it on ONNX Runtime's CPU provider.

tests/test_triton_server.py serves `kanet triton`'s CPU model with it: the tritonserver of nvidia-pytriton has the
Python back-end but not the ONNX Runtime one. It runs inside Triton's Python stub (the server's own virtual
environment), so it imports neither kanet nor pytest. Session options as runtime/onnx_backend.py sets them, so the
frames equal a local run's bit for bit.
"""
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(Path(__file__).with_name("model.onnx")), options,
                                             providers=["CPUExecutionProvider"])
        (inp,), (out,) = self._session.get_inputs(), self._session.get_outputs()
        self._in, self._out = inp.name, out.name

    def execute(self, requests: list) -> list:
        # dynamic batching hands over several requests at once; each is a batch of its own
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, self._in).as_numpy()
            dehazed = self._session.run([self._out], {self._in: frames})[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self._out, dehazed)]))
        return responses
