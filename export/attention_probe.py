"""Which attention blocks the installed TensorRT builds as its native attention layer, found by building.

TensorRT parses an opset-23 Attention node into its attention layer, but builds it only where a dedicated
kernel exists for that (heads, head size, precision) on the target GPUs; elsewhere the build fails. So the
engine source gets an Attention node only for the forms a one-node probe engine built, and the Q-scaled
MatMul -> Softmax -> MatMul chain (which TensorRT fuses on its own) for the rest. Probe results are kept in
the user cache folder, per TensorRT flavour and version, precision and targets.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from onnx import TensorProto, helper

from runtime.atomic import write_bytes

from .engine import BuildOptions, engine_targets, import_tensorrt, network_flags, set_targets_and_cache
from .errors import ExportError
from .onnx_attention import ATTENTION_FORMS_KEY

PROBES_FILE = "attention_probes.json"
# Token counts the probe's profile spans: stage 1 of a 4 x 1088 x 1920 batch has 130,560 queries.
_QUERIES = (1, 4096, 131072)
_KEYS = (1, 1024, 131072)
_DTYPES = {"fp16": TensorProto.FLOAT16, "fp32": TensorProto.FLOAT}


@dataclass(frozen=True)
class AttentionForm:
    """How the attention blocks of one (heads, head size) are written into an engine source, and why."""
    heads: int
    head_size: int
    blocks: int
    native: bool  # an Attention node (TensorRT's attention layer); else the Q-scaled MatMul chain
    why: str


def _probe_model(heads: int, head_size: int, precision: str) -> bytes:
    dtype = _DTYPES[precision]
    inputs = [helper.make_tensor_value_info(name, dtype, ["batch", heads, seq, head_size])
              for name, seq in (("q", "queries"), ("k", "keys"), ("v", "keys"))]
    output = helper.make_tensor_value_info("out", dtype, ["batch", heads, "queries", head_size])
    node = helper.make_node("Attention", ["q", "k", "v"], ["out"], scale=head_size ** -0.5)
    graph = helper.make_graph([node], "attention_probe", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]).SerializeToString()


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """What native code writes to file descriptor 2 inside the block, as lines, instead of the terminal."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read().decode(errors="replace").splitlines()


def _build_probe(trt, flavour: str, targets: list[str], heads: int, head_size: int, precision: str,
                 scratch: Path) -> str | None:
    """None when the one-node engine builds, else TensorRT's first error line."""
    errors: list[str] = []

    class Capture(trt.ILogger):  # the expected failure is an answer, not something to print
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, message) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                errors.append(str(message))

    logger = Capture()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, flavour))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(_probe_model(heads, head_size, precision)):
        return "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors)) or "did not parse"
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (least, usual, most) in (("q", _QUERIES), ("k", _KEYS), ("v", _KEYS)):
        profile.set_shape(name, (1, heads, least, head_size), (1, heads, usual, head_size), (4, heads, most, head_size))
    config.add_optimization_profile(profile)
    set_targets_and_cache(trt, flavour, config, targets, scratch / "probe.plan")
    with _stderr_captured() as printed:  # the kernel library prints its refusal straight to stderr
        built = builder.build_serialized_network(network, config) is not None
    if built:
        return None
    text = " ".join(errors + printed) or "the build failed"
    for marker in ("Attention operation was not supported by a dedicated kernel", "not supported"):
        if marker in text:
            return marker
    return text.splitlines()[0][:200]


def attention_forms(shapes: list[tuple[int, int]], precision: str, options: BuildOptions, cache_root: Path,
                    prefer: str | None = None) -> list[AttentionForm]:
    """One AttentionForm per distinct (heads, head size) in `shapes`, probed (or read from the cache) with the
    TensorRT flavour and targets the engine is built with."""
    try:
        trt, flavour = import_tensorrt(prefer)
    except ExportError as exc:
        return [AttentionForm(h, d, shapes.count((h, d)), False, f"no TensorRT to probe with ({exc})")
                for h, d in dict.fromkeys(shapes)]
    targets = engine_targets(trt, flavour, options)
    where = f"{flavour} {trt.__version__} {precision} for {'+'.join(targets)}"
    cache_file = cache_root / PROBES_FILE
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}  # none yet, or damaged: probed again
    forms = []
    for heads, head_size in dict.fromkeys(shapes):
        key = f"{where} heads={heads} head_size={head_size}"
        if key not in known:
            known[key] = _build_probe(trt, flavour, targets, heads, head_size, precision, cache_root)
        failure = known[key]
        why = f"built by {where}" if failure is None else f"not built by {where}: {failure}"
        forms.append(AttentionForm(heads, head_size, shapes.count((heads, head_size)), failure is None, why))
    write_bytes(cache_file, json.dumps(known, indent=2, sort_keys=True).encode())
    return forms


def native_shapes(forms: list[AttentionForm]) -> frozenset[tuple[int, int]]:
    return frozenset((f.heads, f.head_size) for f in forms if f.native)


def forms_metadata(forms: list[AttentionForm]) -> dict[str, str]:
    """The ONNX metadata that keeps the forms and reasons inside the engine source, for the engine's manifest."""
    return {ATTENTION_FORMS_KEY: json.dumps([asdict(f) for f in forms])}
