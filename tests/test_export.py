"""Export: checkpoint -> ONNX -> FP16 ONNX -> TensorRT-RTX engine + manifest, cache, parity, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import HAS_GPU, REPO, SAMPLES, SMALL
from export.engine import BuildOptions, import_tensorrt
from export.attention_probe import attention_forms
from export.onnx_attention import attention_report, recorded_attention_forms
from export.onnx_export import export_onnx
from export.parity import Metrics, ParityReport, Thresholds, compare, failed_thresholds, frame_cases, run_parity
from export.pipeline import engine_from_onnx, export_checkpoint
from runtime.manifest import TensorRTBuild, incompatibility, read_manifest, sha256_file

def _graph(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def test_fp32_onnx_structure(exported):
    model = _graph(exported["dir"] / "kanet_fp32.onnx")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LayerNormalization") == 53  # every LayerNorm is one node
    assert not {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"} & set(ops)
    (inp,), (out,) = model.graph.input, model.graph.output  # z is not an output
    assert (inp.name, out.name) == ("frames", "dehazed")
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    onnx.checker.check_model(model, full_check=True)
    # ONNX Runtime's model: every attention fused, no score matrix; the FP16 engine source: TensorRT's Attention
    assert attention_report(model) == exported["summary"]["onnx_fp32"]["attention"] == \
        {"multihead_attention": 14, "onnx_attention": 0, "softmax_chains": 0, "q_scaled_chains": 0}
    assert exported["summary"]["onnx_fp16"]["attention"] == exported["summary"]["onnx_fp32"]["attention"]
    assert exported["summary"]["onnx_fp16_tensorrt"]["attention"] == \
        {"multihead_attention": 0, "onnx_attention": 14, "softmax_chains": 0, "q_scaled_chains": 0}
    assert "MultiHeadAttention" not in {n.op_type for n in _graph(exported["dir"] / "kanet_fp16_tensorrt.onnx").graph.node}


def test_export_prints_a_short_summary_and_keeps_the_details_in_export_json(checkpoint, exported):
    out, summary = exported["dir"], exported["summary"]
    lines = exported["stdout"].splitlines()
    assert lines[0] == f"exported {checkpoint} to {out}/" and len(lines) == 8, exported["stdout"]
    for name in ("kanet_fp32.onnx", "kanet_fp16.onnx", "kanet_fp16_tensorrt.onnx", "kanet_fp16.plan", "kanet_fp16.json",
                 "export.json"):
        row = next(line.split() for line in lines if line.split()[0] == name)
        size = (out / name).stat().st_size
        assert row[1:3] == (f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB").split()
    assert f"FP16 ONNX, engine source, {len(summary['fp32_nodes'])} nodes kept FP32" in exported["stdout"]
    assert lines[-1] == ("attention: 14 MultiHeadAttention nodes per ONNX Runtime model; FP16 engine source: 14 "
                         "Attention nodes (TensorRT's attention layer, where a probe engine built), 0 Q-scaled "
                         "MatMul -> Softmax -> MatMul chains")
    assert "{" not in exported["stdout"]  # the reasons dict stays in export.json
    assert len(json.loads((out / "export.json").read_text())["fp32_nodes"]) == len(summary["fp32_nodes"])


def frames_reference(model, frames: np.ndarray) -> np.ndarray:
    """The frame conversion written out in numpy, independent of FrameIO: BGR uint8 -> RGB in [-1, 1], NCHW ->
    model.dehaze -> x 255, rounded -> BGR uint8, NHWC."""
    rgb = np.ascontiguousarray(frames[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32) * (2 / 255) - 1
    with torch.no_grad():
        clean = model.dehaze(torch.from_numpy(rgb)).numpy()
    return np.rint(np.clip(clean, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)[..., ::-1]


@pytest.mark.parametrize("shape", [(1, 64, 80), (2, 50, 77), (1, 100, 47), (3, 33, 65)])
def test_fp32_frames_onnx_matches_pytorch(model, exported, shape):
    frames = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(exported["dir"] / "kanet_fp32.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"frames": frames})[0]
    ref = frames_reference(model, frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("shape", [(1, 48, 64), (2, 61, 90)])
def test_fp32_tensor_onnx_matches_pytorch(model, tensor_onnx, shape):
    x = np.random.default_rng(shape[1]).uniform(-1, 1, (shape[0], 3, *shape[1:])).astype(np.float32)
    session = ort.InferenceSession(str(tensor_onnx), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x})[0]
    with torch.no_grad():
        ref = model.dehaze(torch.from_numpy(x)).numpy()
    assert out.shape == x.shape
    assert np.abs(out - ref).max() <= 1e-4


def _input_types_by_op(path: Path) -> dict[str, set[int]]:
    model = onnx.shape_inference.infer_shapes(_graph(path))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    by_op: dict[str, set[int]] = {}
    for node in model.graph.node:
        by_op.setdefault(node.op_type, set()).add(types.get(node.input[0]))
    return by_op


def test_fp16_onnx_keeps_sensitive_ops_in_fp32(exported):
    for name, attention in (("kanet_fp16_tensorrt.onnx", "Attention"), ("kanet_fp16.onnx", "MultiHeadAttention")):
        by_op = _input_types_by_op(exported["dir"] / name)
        for op in ("LayerNormalization", "ReduceMean", "Cos"):
            assert by_op[op] == {onnx.TensorProto.FLOAT}, (name, op)
        assert by_op[attention] == {onnx.TensorProto.FLOAT16}, name  # softmax runs inside the attention node
        # None: after a com.microsoft node, which ONNX shape inference cannot type
        assert onnx.TensorProto.FLOAT16 in by_op["MatMul"] <= {onnx.TensorProto.FLOAT16, None}, name
        assert "Softmax" not in by_op
    assert exported["summary"]["onnx_fp16_tensorrt"]["fp16_compute_nodes"] >= 160  # 14 Attention nodes hold 28 MatMuls
    reasons = set(exported["summary"]["fp32_nodes"].values())
    assert any("LayerNorm" in r or "mean/variance" in r for r in reasons)


def test_engine_and_manifest(exported):
    plan = exported["dir"] / "kanet_fp16.plan"
    manifest = read_manifest(plan)
    assert manifest.engine.sha256 == sha256_file(plan)
    assert plan.read_bytes()[:1] != b"{"  # pure plan: metadata lives in the sidecar
    assert manifest.onnx.sha256 == sha256_file(exported["dir"] / "kanet_fp16_tensorrt.onnx")
    assert manifest.precision == "fp16" and manifest.targets == ["SM89"]
    assert manifest.io["input"] == {"name": "frames", "dtype": "UINT8", "layout": "NHWC BGR"}
    assert manifest.profiles[0].max == [2, 128, 160]
    trt, flavour = import_tensorrt()
    assert manifest.tensorrt == TensorRTBuild(flavour, trt.__version__)
    assert manifest.fp32_nodes and manifest.builder["strongly_typed"]
    on_disk = json.loads(plan.with_suffix(".json").read_text())  # the typed form reads and writes the file's layout
    assert on_disk["format"] == "kanet-engine-manifest" and manifest.to_json() == on_disk


def test_engine_source_attention_forms_are_probed_and_recorded(exported):
    """Every (heads, head size) of KA-Net builds as TensorRT-RTX's FP16 attention layer for SM89; the reason
    travels in the ONNX metadata into export.json and the engine manifest."""
    source = _graph(exported["dir"] / "kanet_fp16_tensorrt.onnx")
    assert max(o.version for o in source.opset_import if o.domain in ("", "ai.onnx")) == 23
    forms = exported["summary"]["onnx_fp16_tensorrt"]["attention_forms"]
    assert recorded_attention_forms(source) == forms == read_manifest(exported["dir"] / "kanet_fp16.plan").attention_forms
    assert sorted((f["heads"], f["head_size"], f["blocks"]) for f in forms) == [
        (1, 64, 2), (1, 128, 1), (2, 64, 2), (2, 160, 1), (2, 256, 1), (4, 80, 2), (4, 128, 2), (8, 64, 3)]
    _, flavour = import_tensorrt()
    assert all(f["native"] and f["why"].startswith(f"built by {flavour} ") and f["why"].endswith("fp16 for SM89")
               for f in forms)


def test_attention_probe_finds_forms_without_a_kernel_and_caches_its_answers(tmp_path):
    options = BuildOptions(SMALL.profile, compute_capabilities=("SM89",))
    forms = attention_forms([(1, 64), (1, 7), (1, 64)], "fp16", options, tmp_path)
    assert [(f.heads, f.head_size, f.blocks, f.native) for f in forms] == [(1, 64, 2, True), (1, 7, 1, False)]
    assert "not supported by a dedicated kernel" in forms[1].why
    cached = json.loads((tmp_path / "attention_probes.json").read_text())
    assert len(cached) == 2
    key = next(k for k in cached if "head_size=64" in k)
    cached[key] = "an answer only the cache holds"  # a second call reads the cache instead of building
    (tmp_path / "attention_probes.json").write_text(json.dumps(cached))
    again = attention_forms([(1, 64)], "fp16", options, tmp_path)
    assert not again[0].native and again[0].why.endswith("an answer only the cache holds")


def test_mixed_attention_forms_compute_the_same_frames(model, tmp_path):
    """Attention nodes for some blocks, chains for the rest: ONNX Runtime gives PyTorch's frames."""
    path = tmp_path / "mixed.onnx"
    written = export_onnx(model, path, opset=23, attention="tensorrt", native_attention=frozenset({(8, 64), (1, 64)}))
    assert written["attention"] == {"multihead_attention": 0, "onnx_attention": 5, "softmax_chains": 9,
                                    "q_scaled_chains": 9}
    frames = np.random.default_rng(3).integers(0, 256, (2, 61, 90, 3), dtype=np.uint8)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"frames": frames})[0]
    assert np.abs(out.astype(int) - frames_reference(model, frames).astype(int)).max() <= 1


def test_engine_layers_fp16_except_kept_islands(exported):
    precisions = read_manifest(exported["dir"] / "kanet_fp16.plan").layer_precisions
    by_type = precisions["by_type"]
    assert set(by_type["MATRIX_MULTIPLY"]) == {"HALF"}
    assert set(by_type["DECONVOLUTION"]) == {"HALF"}
    assert by_type["CONVOLUTION"]["FLOAT"] == 3 and by_type["CONVOLUTION"]["HALF"] >= 60
    assert set(by_type["NORMALIZATION"]) == {"FLOAT"}
    assert by_type["ATTENTION_OUTPUT"] == {"HALF": 14} and "SOFTMAX" not in by_type  # TensorRT's attention layer
    kept = set(exported["summary"]["fp32_nodes"])
    assert all(name in kept for name in precisions["fp32_layers"]), "an FP32 layer outside the kept islands"


def test_export_caches_the_engine_in_the_user_cache_folder_and_leaves_the_working_folder_empty(exported):
    assert list(exported["cwd"].iterdir()) == []
    cached = Path(exported["summary"]["engine"]["engine"]["cached_copy"])
    assert cached.parent == exported["cache"] / "engines" and cached.is_file()


def test_engine_cache_reuses_and_rebuilds(exported):
    fp16 = exported["dir"] / "kanet_fp16_tensorrt.onnx"
    again = engine_from_onnx(fp16, exported["dir"] / "again", SMALL, exported["cache"], "fp16", [])
    assert again.reused_from_cache
    changed = BuildOptions(SMALL.profile, SMALL.workspace_gib, 1, SMALL.compute_capabilities)
    rebuilt = engine_from_onnx(fp16, exported["dir"] / "changed", changed, exported["cache"], "fp16", [])
    assert not rebuilt.reused_from_cache
    assert rebuilt.manifest.builder["optimization_level"] == 1


def test_incompatible_engine_message_says_how_to_rebuild(exported):
    manifest = read_manifest(exported["dir"] / "kanet_fp16.plan")
    version_msg = incompatibility(manifest, "tensorrt", "10.9.0", None)
    assert "tensorrt_rtx" in version_msg and "kanet build" in version_msg
    built = manifest.tensorrt
    gpu_msg = incompatibility(manifest, built.flavour, built.version, "SM120")
    assert "SM89" in gpu_msg and "kanet build" in gpu_msg
    assert incompatibility(manifest, built.flavour, built.version, "SM89") is None


def test_parity_passes_fp32_and_fp16_on_random_and_real_frames(model, exported):
    cases = frame_cases(photos=SAMPLES)
    assert sum(name.startswith("photo_") for name, _ in cases) == 7
    candidates = {name: (exported["dir"] / f"kanet_{name}.onnx", name[:4]) for name in ("fp32", "fp16", "fp16_tensorrt")}
    report = run_parity(model, candidates, cases)
    assert report.passed, [r for r in report.results if r.failures]
    assert {r.candidate for r in report.results} == {"fp32", "fp16", "fp16_tensorrt"}


def test_parity_flags_a_model_that_differs(model, exported):
    cases = frame_cases(sizes=((1, 64, 64),))
    other = type(model)(rff_seed=123).eval()  # different weights: must fail FP32 parity
    report = run_parity(other, {"fp32": (exported["dir"] / "kanet_fp32.onnx", "fp32")}, cases, Thresholds())
    assert not report.passed


def _metrics(**changes) -> Metrics:
    return Metrics(**{"nonfinite": 0, "max_abs": 0.0, "mean_abs": 0.0, "psnr_db": 60.0, "within_1_step": 1.0,
                      "within_2_steps": 1.0, **changes})


@pytest.mark.parametrize("precision, io, metrics, failed", [
    ("fp16", "frames", _metrics(psnr_db=45.0), False),           # the documented limits themselves pass
    ("fp16", "frames", _metrics(psnr_db=44.0), "PSNR 44.0 dB < 45.0 dB"),
    ("fp16", "frames", _metrics(within_2_steps=0.99), False),
    ("fp16", "frames", _metrics(within_2_steps=0.9899), "within 2 steps < 99%"),
    ("fp32", "frames", _metrics(within_1_step=0.9999), "within 1 step < 100%"),  # frame I/O: every value 1 step
    ("fp32", "frames", _metrics(max_abs=2 / 255), False),        # |diff| on [0, 1] is for tensor I/O only
    ("fp32", "tensor", _metrics(max_abs=1.01e-4), "max |diff| 1.01e-04 > 1e-04"),
    ("fp32", "tensor", _metrics(max_abs=1e-4), False),
    ("fp16", "frames", _metrics(nonfinite=1), "1 NaN/Inf values"),
])
def test_parity_thresholds_are_the_documented_numbers(precision, io, metrics, failed):
    """README: FP32 max |diff| <= 1e-4 on [0, 1] tensors and every 8-bit value within 1 step; FP16 PSNR >= 45 dB,
    >= 99% of 8-bit values within 2 steps, no NaN/Inf. Just past a limit fails, at it passes."""
    failures = failed_thresholds(metrics, precision, io, Thresholds())
    assert (any(failed in f for f in failures) if failed else failures == []), failures


def test_cli_parity_exits_1_when_the_export_dir_fails_its_thresholds(model, exported, tmp_path, capsys):
    """Models of other weights, checked with --export-dir: the FP32 frame-I/O model fails its 1-step threshold
    and the command says FAILED with exit status 1 (not 0, not 2)."""
    from kanet.cli import main
    from training import save_checkpoint

    other = save_checkpoint(type(model)(rff_seed=123).eval(), tmp_path / "other.pt")
    report = tmp_path / "parity.json"
    code = main(["parity", str(other), "--export-dir", str(exported["dir"]), "--photos", "", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED" in out.splitlines()[-1], out
    rows = json.loads(report.read_text())["results"]
    fp32 = [r for r in rows if r["candidate"] == "kanet_fp32"]
    assert fp32 and all(r["io"] == "frames" and any("within 1 step" in f for f in r["failures"]) for r in fp32)


def test_compare_metrics():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 3
    m = compare(a, b)
    assert m.max_abs == pytest.approx(3 / 255) and m.within_1_step == pytest.approx(47 / 48)
    assert compare(a.astype(np.float32), np.full(a.shape, np.nan, np.float32)).nonfinite == a.size


def _kanet(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_parity_on_export_dir_from_an_empty_folder(checkpoint, exported, tmp_path):
    """Outside the repository the default photographs are still the bundled samples; the report lands here."""
    result = _kanet("parity", str(checkpoint), "--export-dir", str(exported["dir"]), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    report = ParityReport.from_json(json.loads((tmp_path / "parity.json").read_text()))
    assert report.passed and len({r.case for r in report.results if r.case.startswith("photo_")}) == 7


def test_cli_parity_takes_a_model_as_kanet_run_does(checkpoint, exported, tmp_path, capsys):
    """--model DIR resolves like `kanet run --model DIR`: on the CPU, the folder's FP32 ONNX."""
    from kanet.cli import main

    report = tmp_path / "parity.json"
    assert main(["parity", str(checkpoint), "--model", str(exported["dir"]), "--device", "cpu", "--photos", "",
                 "--report", str(report)]) == 0, capsys.readouterr()
    assert {r["candidate"] for r in json.loads(report.read_text())["results"]} == {"kanet_fp32"}


def test_cli_parity_that_compared_nothing_says_why_not_failed(checkpoint, tmp_path, capsys):
    """A model that fits no case (here an ONNX model exported with a fixed 1x8x8x3 input; on a GPU, an engine whose
    profile excludes every case) is not a failed model: exit 2, `nothing compared`, with the reason."""
    from onnx import TensorProto, helper

    from kanet.cli import main

    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, [1, 8, 8, 3])
    out = helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 8, 8, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["out"])], "fixed", [frames], [out])
    fixed = tmp_path / "fixed_shape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fixed)
    report = tmp_path / "parity.json"
    assert main(["parity", str(checkpoint), "--onnx", str(fixed), "--photos", str(SAMPLES),
                 "--report", str(report)]) == 2
    captured = capsys.readouterr()
    assert "FAILED" not in captured.out + captured.err
    assert captured.err.strip().splitlines()[-1] == (
        "kanet parity: error: nothing compared: every case was skipped (fixed_shape: not the model's fixed input "
        f"shape 1x8x8x3); report written to {report}")
    written = json.loads(report.read_text())
    assert written["results"] == [] and len(written["skipped"]) == len(frame_cases(photos=SAMPLES))


@pytest.mark.parametrize("problem", ["missing", "corrupt", "layout", "profile", "opset"])
def test_cli_export_bad_input_is_a_clear_error(model, tmp_path, problem):
    ckpt = tmp_path / "model.pt"
    args = ["--out", str(tmp_path / "out"), "--no-engine"]
    if problem == "missing":
        ckpt = tmp_path / "absent.pt"
        expect = "absent.pt: no such checkpoint file"
    elif problem == "corrupt":
        ckpt.write_bytes(b"\x80garbage")
        expect = "model.pt: not a readable PyTorch checkpoint"
    elif problem == "layout":
        torch.save({"model": {"conv.weight": torch.zeros(3)}}, ckpt)
        expect = "does not match the KA-Net layout"
    else:
        torch.save(model.state_dict(), ckpt)
        if problem == "profile":  # refused before the ONNX export, when an engine is to be built
            args = ["--out", str(tmp_path / "out"), "--min", "1x512x512", "--max", "1x256x256"]
            expect = "need min <= opt <= max"
        else:
            args += ["--opset", "16"]
            expect = "opset 16 is not supported"
    result = _kanet("export", str(ckpt), *args)
    assert result.returncode == 2
    assert expect in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "kanet_fp32.onnx").exists()


def test_cli_export_without_engine_ignores_the_engine_flags(checkpoint, tmp_path, capsys):
    from kanet.cli import main

    out = tmp_path / "out"
    # a profile no engine could have (opt above max): never checked; a malformed size is still refused while
    # parsing, like any other malformed option (tests/test_errors.py)
    assert main(["export", str(checkpoint), "--out", str(out), "--no-engine", "--opt", "1x2000x2000",
                 "--max", "1x64x64"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "kanet_fp16.onnx", "kanet_fp16_tensorrt.onnx",
                                                     "kanet_fp32.onnx"]


def test_build_rejects_a_missing_onnx(tmp_path):
    result = _kanet("build", str(tmp_path / "none.onnx"), "--out", str(tmp_path))
    assert result.returncode == 2 and "none.onnx: no such ONNX file" in result.stderr


def test_build_refuses_the_onnx_runtime_model_and_names_the_engine_sources(exported, tmp_path):
    result = _kanet("build", str(exported["dir"] / "kanet_fp32.onnx"), "--out", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "kanet_fp32.onnx: holds com.microsoft.MultiHeadAttention" in result.stderr
    assert "kanet_fp16_tensorrt.onnx" in result.stderr and "kanet_fp32_tensorrt.onnx" in result.stderr


@pytest.mark.skipif(HAS_GPU, reason="checks the message shown on machines without a GPU")
def test_cli_parity_engine_without_gpu_is_a_clear_error(checkpoint, exported, tmp_path):
    engine = exported["dir"] / "kanet_fp16.plan"
    result = _kanet("parity", str(checkpoint), "--engine", str(engine), "--report", str(tmp_path / "p.json"))
    assert result.returncode == 2 and "needs an NVIDIA GPU" in result.stderr and "Traceback" not in result.stderr
    result = _kanet("parity", str(checkpoint), "--export-dir", str(exported["dir"]), "--report", str(tmp_path / "p.json"))
    assert result.returncode == 0 and "kanet_fp16.plan not checked" in result.stdout


@pytest.mark.gpu
def test_parity_runs_the_engine_through_the_runtime(model, exported, tmp_path):
    """FP16 engine (built for this GPU) against PyTorch FP32; a case beyond the profile is skipped, not tiled."""
    _, flavour = import_tensorrt()
    options = BuildOptions(SMALL.profile, compute_capabilities=("current",) if flavour == "tensorrt_rtx" else ())
    manifest = engine_from_onnx(exported["dir"] / "kanet_fp16_tensorrt.onnx", tmp_path, options, tmp_path / "cache", "fp16", []).manifest
    cases = frame_cases(sizes=((1, 96, 128), (2, 75, 101), (1, 200, 200)))
    report = run_parity(model, {"engine": (Path(manifest.engine.path), "fp16")}, cases)
    assert report.passed, report.results
    assert [s.case for s in report.skipped] == ["random_1x200x200"]
    assert len(report.results) == 2


@pytest.mark.gpu
def test_engine_runs_on_gpu_and_matches_onnx(exported, tmp_path):
    """Deserialise and run the engine on the GPU (TensorRT or TensorRT-RTX), against ONNX Runtime FP16."""
    from cuda.bindings import runtime as cudart

    trt, _ = import_tensorrt()
    options = BuildOptions(SMALL.profile, compute_capabilities=("current",) if _ == "tensorrt_rtx" else ())
    manifest = engine_from_onnx(exported["dir"] / "kanet_fp16_tensorrt.onnx", tmp_path, options, tmp_path / "cache", "fp16", []).manifest
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(manifest.engine.path).read_bytes())
    assert engine is not None
    context = engine.create_execution_context()
    frames = np.random.default_rng(0).integers(0, 256, (2, 96, 120, 3), dtype=np.uint8)
    context.set_input_shape("frames", frames.shape)
    out = np.empty_like(frames)
    _, d_in = cudart.cudaMalloc(frames.nbytes)
    _, d_out = cudart.cudaMalloc(out.nbytes)
    _, stream = cudart.cudaStreamCreate()
    try:
        cudart.cudaMemcpy(d_in, frames.ctypes.data, frames.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        context.set_tensor_address("frames", d_in)
        context.set_tensor_address("dehazed", d_out)
        assert context.execute_async_v3(stream)
        cudart.cudaStreamSynchronize(stream)
        cudart.cudaMemcpy(out.ctypes.data, d_out, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
    finally:
        cudart.cudaFree(d_in)
        cudart.cudaFree(d_out)
    session = ort.InferenceSession(str(exported["dir"] / "kanet_fp32.onnx"), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"frames": frames})[0]
    metrics = compare(ref, out)
    assert metrics.nonfinite == 0 and metrics.psnr_db >= 45 and metrics.within_2_steps >= 0.99


@pytest.mark.gpu
def test_fp16_multihead_onnx_runs_on_the_cuda_provider(model, exported):
    """kanet_fp16.onnx (FP16 MultiHeadAttention) on ONNX Runtime's CUDA provider matches PyTorch FP32."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    session = ort.InferenceSession(str(exported["dir"] / "kanet_fp16.onnx"), providers=["CUDAExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    frames = np.random.default_rng(5).integers(0, 256, (2, 97, 131, 3), dtype=np.uint8)
    out = session.run(None, {"frames": frames})[0]
    metrics = compare(frames_reference(model, frames), out)
    assert metrics.nonfinite == 0 and metrics.psnr_db >= 45 and metrics.within_2_steps >= 0.99, metrics


@pytest.mark.gpu
def test_auto_on_a_gpu_without_a_usable_engine_runs_the_fp16_onnx_on_the_cuda_provider(exported):
    """The GPU fallback after TensorRT: an export folder under --backend auto gives ONNX Runtime's CUDA provider
    the FP16 model, and says why the engine was passed over."""
    from runtime import Dehazer
    from runtime.dehazer import engine_unusable

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    why = engine_unusable(0)
    if why is None:
        pytest.skip("an engine runs on this GPU, so auto takes TensorRT (tests/test_gpu_path.py)")
    with Dehazer.load(exported["dir"]) as dehazer:
        assert dehazer.backend == "onnxruntime:CUDAExecutionProvider" and dehazer.precision == "fp16"
        assert dehazer.chosen == f"kanet_fp16.onnx on ONNX Runtime's GPU provider (no engine: {why})"


def test_fp32_engine_is_built_from_the_kept_chain_model(checkpoint, tmp_path):
    summary = export_checkpoint(checkpoint, tmp_path / "out", precision="fp32", options=SMALL,
                                cache_dir=tmp_path / "cache")
    chain = tmp_path / "out" / "kanet_fp32_tensorrt.onnx"
    assert attention_report(_graph(chain)) == summary["onnx_fp32_tensorrt"]["attention"] == \
        {"multihead_attention": 0, "onnx_attention": 0, "softmax_chains": 14, "q_scaled_chains": 14}
    # TensorRT-RTX has no FP32 attention kernel: the probe says so, and the chains stay
    forms = summary["onnx_fp32_tensorrt"]["attention_forms"]
    assert sum(f["blocks"] for f in forms) == 14 and not any(f["native"] for f in forms)
    assert all("not built by tensorrt_rtx" in f["why"] and "fp32 for SM89" in f["why"] for f in forms)
    manifest = read_manifest(tmp_path / "out" / "kanet_fp32.plan")
    assert manifest.attention_forms == forms
    assert manifest.onnx.sha256 == sha256_file(chain) and manifest.precision == "fp32"
