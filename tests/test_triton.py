"""`kanet triton`: each config.pbtxt parses into Triton's own ModelConfig message (tritonclient's generated protobuf
classes) and agrees with the export it was written from: tensor names, dtypes, dims, batch, files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from export.triton_repo import MAX_QUEUE_DELAY_US
from kanet import cli
from runtime.manifest import read_manifest, sha256_file, verify_engine


def triton(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["triton", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_config(repo: Path, name: str) -> mc.ModelConfig:
    """The model's config.pbtxt as Triton reads it: text_format raises on any field not in the schema."""
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def linked_export(exported: dict, dest: Path, manifest_edit=None) -> Path:
    """The export folder with its files hard-linked (no 300 MB copies); `manifest_edit(doc)` changes a fresh copy of
    the engine manifest, e.g. to describe an engine of full TensorRT, which no CPU machine can build."""
    dest.mkdir()
    for path in exported["dir"].iterdir():
        if not path.is_file():
            continue  # folders other tests write into the shared export (e.g. a rebuilt engine's)
        if path.name == "kanet_fp16.json" and manifest_edit:
            doc = json.loads(path.read_text())
            manifest_edit(doc)
            (dest / path.name).write_text(json.dumps(doc))
        else:
            os.link(path, dest / path.name)
    return dest


def full_tensorrt(doc: dict) -> None:
    doc["tensorrt"] = {"flavour": "tensorrt", "version": "10.13.3.9"}


def check_frame_io(config: mc.ModelConfig, names: tuple[str, str], dims: list[int]) -> None:
    (inp,), (out,) = config.input, config.output
    assert (inp.name, out.name) == names
    for tensor in (inp, out):
        assert tensor.data_type == mc.TYPE_UINT8 and list(tensor.dims) == dims


def test_an_export_becomes_onnx_runtime_models_and_says_why_the_rtx_engine_is_left_out(exported, tmp_path, capsys):
    repo = tmp_path / "repo"
    code, out, err = triton(capsys, exported["dir"], "--out", repo)
    assert code == 0, err
    manifest = read_manifest(exported["dir"] / "kanet_fp16.plan")
    assert manifest.tensorrt.flavour == "tensorrt_rtx"  # what this CPU machine builds: Triton cannot load it
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "kanet_onnx_cpu", "kanet_onnx_gpu"]
    assert "not written: kanet_tensorrt: kanet_fp16.plan was built with tensorrt_rtx" in out
    for name, source, kind, precision in (("kanet_onnx_gpu", "kanet_fp16.onnx", mc.ModelInstanceGroup.KIND_GPU, "fp16"),
                                          ("kanet_onnx_cpu", "kanet_fp32.onnx", mc.ModelInstanceGroup.KIND_CPU, "fp32")):
        config = model_config(repo, name)
        session = ort.InferenceSession(str(exported["dir"] / source), providers=["CPUExecutionProvider"])
        assert (config.name, config.platform) == (name, "onnxruntime_onnx")
        assert config.max_batch_size == manifest.profiles[0].max[0]  # the batch the export profiled
        check_frame_io(config, (session.get_inputs()[0].name, session.get_outputs()[0].name), [-1, -1, 3])
        assert config.dynamic_batching.max_queue_delay_microseconds == MAX_QUEUE_DELAY_US
        assert [(g.kind, g.count) for g in config.instance_group] == [(kind, 1)]
        assert config.parameters["precision"].string_value == precision  # what `kanet run --model grpc://...` reports
        assert sha256_file(repo / name / "1" / "model.onnx") == sha256_file(exported["dir"] / source)
    (cuda,) = model_config(repo, "kanet_onnx_gpu").optimization.execution_accelerators.gpu_execution_accelerator
    assert cuda.name == "cuda" and cuda.parameters["cudnn_conv_algo_search"] == "HEURISTIC"
    readme = (repo / "README.md").read_text()
    assert (f"docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo}:/models "
            "nvcr.io/nvidia/tritonserver:<xx.yy>-py3 tritonserver --model-repository=/models") in readme
    assert "Not written: kanet_tensorrt: kanet_fp16.plan was built with tensorrt_rtx" in readme


def test_a_full_tensorrt_engine_becomes_a_tensorrt_plan_model_with_its_manifest(exported, tmp_path, capsys):
    export_dir = linked_export(exported, tmp_path / "export", full_tensorrt)
    repo = tmp_path / "repo"
    code, _, err = triton(capsys, export_dir, "--out", repo, "--instances", "2")
    assert code == 0, err
    manifest = read_manifest(export_dir / "kanet_fp16.plan")
    profile = manifest.profiles[0]  # conftest's SMALL: 1x64x64 .. 2x128x160
    config = model_config(repo, "kanet_tensorrt")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", profile.max[0])
    check_frame_io(config, (manifest.io["input"]["name"], manifest.io["output"]["name"]), [-1, -1, 3])
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
    assert config.parameters["precision"].string_value == manifest.precision == "fp16"
    assert config.dynamic_batching.max_queue_delay_microseconds == MAX_QUEUE_DELAY_US
    plan = repo / "kanet_tensorrt" / "1" / "model.plan"
    verify_engine(plan, read_manifest(plan))  # the manifest travels as 1/model.json and still fits the plan
    assert read_manifest(plan).tensorrt.version == "10.13.3.9"
    assert "TensorRT 10.13.3.9" in (repo / "README.md").read_text()
    assert [g.count for g in model_config(repo, "kanet_onnx_cpu").instance_group] == [2]


def test_overwrite_replaces_the_models_and_keeps_other_entries(exported, tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "other_model").mkdir()
    (repo / "kanet_tensorrt").mkdir()  # left by an earlier run whose export had a full-TensorRT engine
    code, _, err = triton(capsys, exported["dir"], "--out", repo)
    assert code == 2 and err.startswith(f"kanet triton: error: {repo}: exists and is not empty; --overwrite")
    code, _, err = triton(capsys, exported["dir"], "--out", repo, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "kanet_onnx_cpu", "kanet_onnx_gpu", "other_model"]


def _frames_model(path: Path, elem_type: int = TensorProto.UINT8, outputs: int = 1) -> None:
    inp = helper.make_tensor_value_info("frames", elem_type, ["n", "h", "w", 3])
    outs = [helper.make_tensor_value_info(f"out{i}", elem_type, ["n", "h", "w", 3]) for i in range(outputs)]
    nodes = [helper.make_node("Identity", ["frames"], [f"out{i}"]) for i in range(outputs)]
    model = helper.make_model(helper.make_graph(nodes, "m", [inp], outs), opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def _bad_export(kind: str, tmp_path: Path, exported_dir) -> tuple[Path, Path]:
    """(EXPORT_DIR, REPO) for each kind of bad input."""
    if kind == "not an export":
        (tmp_path / "photos").mkdir()
        return tmp_path / "photos", tmp_path / "repo"
    if kind == "repository inside the export":
        return exported_dir(), exported_dir() / "triton"
    if kind == "repository is a file":
        (tmp_path / "repo.txt").write_text("")
        return exported_dir(), tmp_path / "repo.txt"
    if kind == "tensor-I/O model":
        _frames_model(tmp_path / "export" / "kanet_fp32.onnx", TensorProto.FLOAT)
    elif kind == "two outputs":
        _frames_model(tmp_path / "export" / "kanet_fp32.onnx", outputs=2)
    return tmp_path / "export", tmp_path / "repo"


@pytest.mark.parametrize("kind,message", [
    ("not an export", "not a `kanet export` folder (no kanet_fp32.onnx or kanet_fp16.onnx)"),
    ("repository inside the export", "the repository would lie inside the export folder"),
    ("repository is a file", "exists and is not a folder"),
    ("tensor-I/O model", "frames is not uint8 N x H x W x 3 frames (a tensor-I/O export?)"),
    ("two outputs", "1 inputs and 2 outputs; a frame-I/O export has one of each"),
])
def test_bad_input_is_one_line_and_exit_2(kind, message, request, tmp_path, capsys):
    export_dir, repo = _bad_export(kind, tmp_path, lambda: request.getfixturevalue("exported")["dir"])
    code, _, err = triton(capsys, export_dir, "--out", repo)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("kanet triton: error: ") and message in err, err
    assert not (repo.is_dir() and any(repo.iterdir()))  # nothing written


@pytest.mark.parametrize("edit,message", [
    (lambda doc: doc["io"]["input"].update(dtype="FLOAT", layout="NCHW RGB [-1, 1]"),
     "its manifest gives FLOAT NCHW RGB [-1, 1] in, not uint8 NHWC BGR frames"),
    (lambda doc: doc.pop("io"), "its manifest has no io names"),
])
def test_an_engine_manifest_without_frame_io_is_one_line_and_exit_2(edit, message, exported, tmp_path, capsys):
    def describe(doc):
        full_tensorrt(doc)
        edit(doc)

    export_dir = linked_export(exported, tmp_path / "export", describe)
    code, _, err = triton(capsys, export_dir, "--out", tmp_path / "repo")
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
