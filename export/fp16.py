"""FP32 ONNX -> mixed-precision FP16 ONNX for strongly typed TensorRT builds.

TensorRT 11 and TensorRT-RTX build strongly typed networks only: the precision
of every layer comes from the ONNX types. NVIDIA ModelOpt's AutoCast would be the
first choice, but its ONNX extra pulls onnxruntime-gpu and CuPy, which replace
the CPU onnxruntime this project runs on; onnxconverter-common does the same
rewrite (FP16 weights and activations, Casts around kept nodes) with no such cost.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
from onnxconverter_common import float16

from .errors import ExportError

# Op types kept in FP32, and why.
KEEP_OPS = {
    "LayerNormalization": "mean/variance over up to 2048 channels overflow or lose precision in FP16",
    "Softmax": "exp and the sum over up to ~8k keys need FP32 range",
    "ReduceMean": "global reductions over whole feature maps accumulate error in FP16",
    "Cos": "random-feature phases reach tens of radians; FP16 spacing there is ~0.03 rad",
}
SHAPE_REASON = "shape and index arithmetic (padding sizes, task-query indices) must stay exact"
EDGE_REASON = "frame pre/post-processing and the first/last convolution keep full 8-bit accuracy"
RFF_REASON = "the projection feeding the random-feature cosine (its phase must be exact)"
_SHAPE_SOURCES = {"Shape", "Size"}


def _shape_nodes(graph: onnx.GraphProto) -> set[str]:
    """Nodes computing on shapes: fed by Shape/Size (directly or through such nodes) and small constants only.

    These stay FP32 (or integer): TensorRT evaluates them as shape tensors on the
    host, and the task-query index arithmetic must reproduce float32 exactly.
    """
    small = {init.name for init in graph.initializer if _numel(init.dims) <= 8}
    small.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    shape_tensors: set[str] = set()
    shape_nodes: set[str] = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        inputs = [name for name in node.input if name]
        is_shape = node.op_type in _SHAPE_SOURCES or (
            any(name in shape_tensors for name in inputs)
            and all(name in shape_tensors or name in small for name in inputs))
        if is_shape:
            shape_nodes.add(node.name)
            shape_tensors.update(node.output)
    return shape_nodes


def _numel(dims) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def _ancestors(graph: onnx.GraphProto, node: onnx.NodeProto, producers: dict) -> set[str]:
    seen, stack = set(), [node]
    while stack:
        for name in stack.pop().input:
            parent = producers.get(name)
            if parent is not None and parent.name not in seen:
                seen.add(parent.name)
                stack.append(parent)
    return seen


def _edge_nodes(graph: onnx.GraphProto) -> set[str]:
    """The first Conv with everything before it, and the last Conv with everything after it."""
    producers = {out: n for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs:
        raise ExportError("the graph has no Conv node: not a KA-Net export")
    first, last = convs[0], convs[-1]
    keep = {first.name, last.name} | _ancestors(graph, first, producers)
    # Descendants of the last conv: everything after it in topological order that depends on it.
    tainted = set(last.output)
    after = False
    for node in graph.node:
        if node is last:
            after = True
            continue
        if after and any(name in tainted for name in node.input):
            keep.add(node.name)
            tainted.update(node.output)
    return keep


def _rff_projection(graph: onnx.GraphProto) -> set[str]:
    producers = {out: n for n in graph.node for out in n.output}
    return {producers[n.input[0]].name for n in graph.node if n.op_type == "Cos" and n.input[0] in producers}


def kept_fp32_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """name -> reason for every node that stays FP32."""
    graph = model.graph
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    kept: dict[str, str] = {}
    for name in _shape_nodes(graph):
        kept[name] = SHAPE_REASON
    for name in _edge_nodes(graph):
        kept.setdefault(name, EDGE_REASON)
    for name in _rff_projection(graph):
        kept.setdefault(name, RFF_REASON)
    for node in graph.node:
        if node.op_type in KEEP_OPS:
            kept.setdefault(node.name, KEEP_OPS[node.op_type])
    return kept


def _unshare_initializers(graph: onnx.GraphProto) -> None:
    """Give each consumer of a shared initializer its own copy.

    Simplification merges equal constants (e.g. zero biases); one consumer kept
    in FP32 and another converted to FP16 cannot share a tensor.
    """
    initializers = {init.name: init for init in graph.initializer}
    seen: set[str] = set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}__{node.name}_{i}"
                graph.initializer.append(copy)
                node.input[i] = copy.name
            seen.add(name)


def _drop_round_trip_casts(graph: onnx.GraphProto) -> int:
    """Remove FP32 -> FP16 -> FP32 Cast pairs between two kept nodes.

    The converter casts a kept Cast's output down and straight back up for its
    kept consumers; on the shape path that puts an FP16 tensor where TensorRT
    only takes int/float shape tensors, and elsewhere it just loses precision.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    dropped: list[onnx.NodeProto] = []
    for down in graph.node:
        if cast_to(down) != onnx.TensorProto.FLOAT16:
            continue
        ups = consumers.get(down.output[0], [])
        if not ups or any(cast_to(up) != onnx.TensorProto.FLOAT for up in ups):
            continue
        for up in ups:
            for node in consumers.get(up.output[0], []):
                for i, name in enumerate(node.input):
                    if name == up.output[0]:
                        node.input[i] = down.input[0]
            for output in graph.output:
                if output.name == up.output[0]:
                    raise ExportError("a round-trip Cast feeds a graph output; cannot simplify")
        dropped += [down, *ups]
    for node in dropped:
        graph.node.remove(node)
    return len(dropped) // 2


def convert_fp16(src: str | Path, dst: str | Path) -> dict:
    """Write the mixed-precision model; return the FP32-kept nodes with reasons."""
    model = onnx.load(str(src))
    kept = kept_fp32_nodes(model)
    # Stale FP32 value_info entries make the converter insert Casts of the wrong type.
    model.graph.ClearField("value_info")
    _unshare_initializers(model.graph)
    with warnings.catch_warnings():  # one warning per weight below FP16's smallest subnormal
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=False,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST), node_block_list=sorted(kept))
    _drop_round_trip_casts(converted.graph)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(dst))
    by_reason: dict[str, int] = {}
    for reason in kept.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    compute_ops = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Attention"}
    fp16_compute = sum(1 for n in model.graph.node if n.op_type in compute_ops and n.name not in kept)
    return {"path": str(dst), "fp32_nodes": kept, "fp32_by_reason": by_reason,
            "fp16_compute_nodes": fp16_compute, "total_nodes": len(model.graph.node)}
