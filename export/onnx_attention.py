"""What attention an ONNX file holds: its nodes by form, and the forms its exporter recorded (torch-free)."""
from __future__ import annotations

import json

import onnx

ATTENTION_FORMS_KEY = "kanet.attention_forms"  # metadata: how an engine source writes each attention, and why


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def attention_report(model: onnx.ModelProto) -> dict:
    """Count fused MultiHeadAttention nodes, opset-23 Attention nodes, MatMul -> Softmax -> MatMul chains
    and how many of those scale Q before the first MatMul."""
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
    native = sum(1 for n in graph.node if (n.domain, n.op_type) == ("", "Attention"))
    return {"multihead_attention": multihead, "onnx_attention": native, "softmax_chains": chains,
            "q_scaled_chains": q_scaled}


def recorded_attention_forms(model: onnx.ModelProto) -> list[dict]:
    """The attention forms kept in an engine source's metadata; [] for a model exported without them."""
    for prop in model.metadata_props:
        if prop.key == ATTENTION_FORMS_KEY:
            return json.loads(prop.value)
    return []
