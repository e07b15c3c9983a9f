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
from .wrappers import IO_KINDS, IO_NAMES

MIN_OPSET = 17  # LayerNormalization is one node from opset 17 on
DEFAULT_OPSET = 17


def export_onnx(model: KANet, path: str | Path, io: str = "frames", opset: int = DEFAULT_OPSET,
                simplify: bool = True, attention: str = "multihead") -> dict:
    """Write the deployed graph to `path`; return what was checked.

    attention="multihead" writes each attention as com.microsoft.MultiHeadAttention (for ONNX
    Runtime), "matmul" as the Q-scaled MatMul -> Softmax -> MatMul chain (for TensorRT).

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = IO_KINDS[io](model).eval()
    in_name, out_name = IO_NAMES[io]
    # Batch 2 so the batch axis is not specialised; 64 x 80 exercises the tail's trims.
    example = (torch.randint(0, 256, (2, 64, 80, 3), dtype=torch.uint8) if io == "frames"
               else torch.rand(2, 3, 64, 80) * 2 - 1)
    axes = {0: "batch", 1: "height", 2: "width"} if io == "frames" else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad(), attention_export_form(attention):
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
    onnx.save(graph, str(path))
    return {"path": str(path), "io": io, "opset": opset, "simplified": simplify,
            "nodes": len(graph.graph.node), "attention": attention_report(graph)}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def attention_report(model: onnx.ModelProto) -> dict:
    """Count fused MultiHeadAttention nodes, MatMul -> Softmax -> MatMul chains and how many of
    those scale Q before the first MatMul."""
    graph = model.graph
    producers = _producers(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chains = q_scaled = 0
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        first = producers.get(node.input[0])
        after = consumers.get(node.output[0], [])
        if first is None or first.op_type != "MatMul" or not any(n.op_type == "MatMul" for n in after):
            continue
        chains += 1
        scale = producers.get(first.input[0])
        if scale is not None and scale.op_type == "Mul":
            q_scaled += 1
    multihead = sum(1 for n in graph.node if (n.domain, n.op_type) == ("com.microsoft", "MultiHeadAttention"))
    return {"multihead_attention": multihead, "softmax_chains": chains, "q_scaled_chains": q_scaled}
