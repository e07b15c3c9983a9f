"""PyTorch -> ONNX with dynamic batch, height and width; checked, simplified, inspected."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import onnxslim
import torch

from training import KANet
from training.models.layers import ATTENTION_FORMS, attention_export_form

from .errors import ExportError
from .onnx_attention import attention_report
from .wrappers import IO_KINDS, IO_NAMES

MIN_OPSET = 17  # LayerNormalization is one node from opset 17 on
DEFAULT_OPSET = 17
ATTENTION_OPSET = 23  # the Attention operator


def export_onnx(model: KANet, path: str | Path, io: str = "frames", opset: int = DEFAULT_OPSET,
                simplify: bool = True, attention: str = "multihead",
                native_attention: frozenset[tuple[int, int]] = frozenset(), metadata: dict[str, str] | None = None) -> dict:
    """Write the deployed graph to `path`; return what was checked.

    attention="multihead" writes each attention as com.microsoft.MultiHeadAttention (for ONNX
    Runtime); "tensorrt" as an opset-23 Attention node where its (heads, head size) is in
    native_attention, elsewhere as the Q-scaled MatMul -> Softmax -> MatMul chain TensorRT fuses. `metadata` is kept in the
    file's metadata_props.

    The TorchScript-based exporter is used: torch.export cannot yet prove the
    shape relations of a strided pyramid with a dynamic height and width
    (ceil-division chains), while tracing records them as shape ops.
    """
    if io not in IO_KINDS:
        raise ExportError(f"--io must be one of {sorted(IO_KINDS)}, got {io!r}")
    if attention not in ATTENTION_FORMS:
        raise ExportError(f"attention must be one of {ATTENTION_FORMS}, got {attention!r}")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is not supported: KA-Net needs opset >= {MIN_OPSET} "
                          "(LayerNormalization as one node, which TensorRT keeps in FP32)")
    if native_attention and opset < ATTENTION_OPSET:
        raise ExportError(f"opset {opset} has no Attention operator: it needs opset >= {ATTENTION_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = IO_KINDS[io](model).eval()
    in_name, out_name = IO_NAMES[io]
    # Batch 2 so the batch axis is not specialised; 64 x 80 exercises the tail's trims.
    example = (torch.randint(0, 256, (2, 64, 80, 3), dtype=torch.uint8) if io == "frames"
               else torch.rand(2, 3, 64, 80) * 2 - 1)
    axes = {0: "batch", 1: "height", 2: "width"} if io == "frames" else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad(), attention_export_form(attention, native_attention):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), input_names=[in_name], output_names=[out_name],
                          dynamic_axes={in_name: axes, out_name: axes}, opset_version=opset,
                          do_constant_folding=True, dynamo=False,
                          custom_opsets={"com.microsoft": 1} if attention == "multihead" else None)
    graph = onnx.load(str(path))
    if simplify:
        graph = onnxslim.slim(graph)
    graph = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    onnx.checker.check_model(graph, full_check=True)
    if metadata:
        onnx.helper.set_model_props(graph, metadata)
    onnx.save(graph, str(path))
    return {"path": str(path), "io": io, "opset": opset, "simplified": simplify,
            "nodes": len(graph.graph.node), "attention": attention_report(graph)}
