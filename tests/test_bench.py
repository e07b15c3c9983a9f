"""`kanet bench`: a tiny real run writes well-formed JSON, Markdown and a PNG; --compare; FLOPs; targets.

Timings are never asserted: only that the harness measures, records and reports them.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from benchmarks.backends import BenchBackend, TorchBackend
from benchmarks.flops import count_flops
from benchmarks.harness import Settings, Shape, measure_shape, rounds_for
from benchmarks.report import compare, load_results
from benchmarks.targets import evaluate
from benchmarks.video import write_clip
from conftest import HAS_GPU, REPO, SAMPLES
from kanet.cli import SUBCOMMANDS

TINY = ["--resolution", "64x64", "--iterations", "2", "--warmup", "1", "--budget", "1", "--no-progress"]


def kanet(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def export_dir(checkpoint, exported) -> dict:
    """The session's export (conftest): its checkpoint and the folder holding its ONNX models."""
    return {"checkpoint": checkpoint, "dir": exported["dir"]}


@pytest.fixture(scope="module")
def tiny_run(export_dir, tmp_path_factory) -> Path:
    """`kanet bench --quick`, shrunk, from an empty folder outside the repository, the export folder given
    relative to it (the video figure's `kanet run` must find it); no --out: the reports go to runs/bench/exp."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = kanet("bench", "--quick", "--checkpoint", str(export_dir["checkpoint"]),
                 "--export-dir", os.path.relpath(export_dir["dir"], elsewhere),
                 "--backends", "torch-eager,torch-autocast,onnxruntime,openvino,openvino-bf16,tensorrt", "--video-size", "64x64",
                 "--video-frames", "3", *TINY, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kanet bench: writing to runs/bench/exp\n" in done.stderr
    assert [p.name for p in elsewhere.iterdir()] == ["runs"]
    return elsewhere / "runs" / "bench" / "exp"


def test_tiny_run_writes_well_formed_json(tiny_run):
    doc = load_results(tiny_run / "results.json")
    system = doc["system"]
    assert system["git"]["commit"] and len(system["git"]["commit"]) == 40
    assert system["cpu"]["model"] and system["cpu"]["logical_cores"] >= 1
    assert system["libraries"]["torch"] == torch.__version__ and system["libraries"]["onnxruntime"]
    assert {r["backend"] for r in doc["results"]} == {"torch-eager", "torch-autocast", "onnxruntime", "openvino",
                                                      "openvino-bf16"}
    for row in doc["results"]:
        assert (row["batch"], row["height"], row["width"]) == (1, 64, 64) and "error" not in row
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["iterations"] == len(row["samples_ms"]) == 2
        assert row["fps"] == pytest.approx(1e3 / lat["mean"])
        assert row["achieved_tflops"] > 0 and row["setup_s"] >= 0
        assert row["split_ms"]["compute_ms"] > 0
        assert row["memory"]["host_rss_mib"] > 0
    assert doc["backends"]["torch-autocast"]["precision"] == ("fp16" if HAS_GPU else "bf16")
    assert doc["backends"]["onnxruntime"]["precision"] == "fp32"
    openvino = doc["backends"]["openvino-bf16"]
    assert doc["backends"]["openvino"]["precision"] == "fp32" and openvino["runtime_backend"].startswith("openvino ")
    # what the CPU ran: BF16 where it has it (OpenVINO falls back to FP32 elsewhere)
    from runtime.openvino_backend import shared_core

    assert openvino["precision"] == ("bf16" if "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
                                     else "fp32")
    assert system["libraries"]["openvino"]
    flops = doc["flops"]["shapes"]["1x64x64"]
    assert flops["per_frame"] == flops["total"] > 0 and flops["by_op"]["bmm"] > 0
    if not HAS_GPU:
        assert "GPU" in doc["skipped"]["tensorrt"]
    assert {t["id"] for t in doc["targets"]} >= {"gpu_engine_vs_eager", "cpu_ort_vs_eager_720x1280"}
    assert all(t["met"] is None for t in doc["targets"] if t["id"] != "video_vs_model_only")  # no 256/720/1080 data
    if "run" in SUBCOMMANDS:
        assert doc["video"]["clip"] == {"height": 64, "width": 64, "frames": 3, "codec": "h264"}
        assert doc["video"]["fps"] > 0 and doc["video"]["reference_backend"] == "onnxruntime"
    else:
        assert "kanet run" in doc["video"]["skipped"]


def test_tiny_run_writes_markdown_and_png(tiny_run):
    table = (tiny_run / "results.md").read_text()
    assert "| shape NxHxW | backend | precision | p50 ms |" in table
    for backend in ("torch-eager", "torch-autocast", "onnxruntime"):
        assert f"| 1x64x64 | {backend} |" in table
    assert "## Targets (recorded, not asserted)" in table and "tensorrt:" in table
    png = tiny_run / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 300


def test_compare_prints_ratios(tiny_run, tmp_path):
    doc = json.loads((tiny_run / "results.json").read_text())
    slower = copy.deepcopy(doc)
    for row in slower["results"]:
        row["latency_ms"] = {k: v * 2 for k, v in row["latency_ms"].items()}
        row["fps"] /= 2
    (tmp_path / "b.json").write_text(json.dumps(slower))
    done = kanet("bench", "--compare", str(tiny_run / "results.json"), str(tmp_path / "b.json"))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("1x64x64")]
    ran = {r["backend"] for r in doc["results"] if "latency_ms" in r and (r["height"], r["width"]) == (64, 64)}
    assert len(lines) == len(ran) >= 3 and all(line.split()[-2:] == ["2.000", "0.500"] for line in lines)
    disjoint = copy.deepcopy(doc)
    for row in disjoint["results"]:
        row["height"] = 65
    with pytest.raises(ValueError, match="share no"):
        compare(doc, disjoint)


@pytest.mark.parametrize("args, message", [
    (["--compare", "README.md", "README.md"], "not a readable JSON file"),
    (["--backends", "torch-eager,tensorflow"], "unknown tensorflow"),
    (["--iterations", "5", "--min-iterations", "6"], "--min-iterations 6 exceeds --iterations 5"),
    (["--video-size", "65x64"], "even height and width"),
])
def test_bad_input_is_one_line_error(args, message):
    done = kanet("bench", *args)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_flops_on_meta_count_attention_that_a_cpu_run_misses(model):
    from torch.utils.flop_counter import FlopCounterMode

    from export.wrappers import FrameIO

    meta = count_flops(1, 64, 80)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        FrameIO(model)(torch.zeros(1, 64, 80, 3, dtype=torch.uint8))
    real = {str(op).removeprefix("aten."): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert meta["by_op"]["convolution"] == real["convolution"] and meta["by_op"]["addmm"] == real["addmm"]
    assert meta["by_op"]["bmm"] > 0 and "bmm" not in real  # CPU's fused attention kernel has no FLOP formula
    assert count_flops(2, 64, 80)["total"] > 1.9 * meta["total"]


def test_profiles_rank_op_types(model, export_dir):
    from benchmarks import profiling

    frames = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    ort_ops = profiling.onnxruntime_ops(export_dir["dir"] / "kanet_fp32.onnx", frames)
    torch_ops = profiling.torch_ops(model, frames)
    for ops in (ort_ops, torch_ops):
        assert 0 < len(ops) <= profiling.TOP and 0 < sum(o["share"] for o in ops) <= 1.0001
        assert [o["ms_per_call"] for o in ops] == sorted((o["ms_per_call"] for o in ops), reverse=True)
    assert "Conv" in {o["op"] for o in ort_ops} and "aten::mkldnn_convolution" in {o["op"] for o in torch_ops}


class _Failing(BenchBackend):
    name, precision, includes = "failing", "fp32", "raises on every call"

    def infer_timed(self, frames):
        raise RuntimeError("no kernel for this shape\nsecond line")

    def memory(self, frames):
        return {}


def test_harness_records_a_failing_backend_and_keeps_the_others(model):
    eager = TorchBackend("torch-eager", model, torch.device("cpu"))
    rows = measure_shape([_Failing(), eager], Shape(1, 48, 48), Settings(warmup=0, iterations=3, min_iterations=3,
                                                                         budget_s=0.001), progress=False)
    assert rows[0]["error"] == "RuntimeError: no kernel for this shape"
    assert rows[1]["iterations"] == 3 and len(rows[1]["samples_ms"]) == 3
    assert rounds_for(1000.0, Settings(iterations=30, min_iterations=3, budget_s=10)) == 10
    assert rounds_for(1.0, Settings(iterations=30, min_iterations=3, budget_s=10)) == 30
    assert rounds_for(1e6, Settings(iterations=30, min_iterations=3, budget_s=10)) == 3


def test_harness_progress_in_a_log_is_whole_lines(model, capsys):
    """Off a terminal (a log, CI) each step ends in a line, with no carriage-return redraws."""
    eager = TorchBackend("torch-eager", model, torch.device("cpu"))
    measure_shape([eager], Shape(1, 48, 48), Settings(warmup=1, iterations=2, min_iterations=2, budget_s=0.001))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    for step in ("setup: 1/1 backends", "warm-up: 1/1 rounds", "timing: 2/2 calls"):
        assert any(step in line for line in lines), (step, err)


def _row(backend: str, shape: tuple[int, int, int], p50: float, **extra) -> dict:
    return {"backend": backend, "precision": "fp32", "batch": shape[0], "height": shape[1], "width": shape[2],
            "latency_ms": {"p50": p50}, "fps": shape[0] * 1e3 / p50, **extra}


def test_targets_record_met_and_missed_by_how_much():
    hd = (1, 1080, 1920)
    gpu_doc = {"system": {"gpu": {"name": "NVIDIA H100"}, "device": "NVIDIA H100"}, "results": [
        _row("torch-eager", hd, 100.0), _row("torch-compile", hd, 30.0),
        _row("tensorrt", hd, 25.0, memory={"device_peak_mib": 1000.0})],
        "video": {"fps": 30.0, "clip": {"height": 1080, "width": 1920}, "reference_backend": "tensorrt"}}
    found = {t["id"]: t for t in evaluate(gpu_doc)}
    assert found["gpu_engine_vs_eager"]["met"] is False and "missed by 20%" in found["gpu_engine_vs_eager"]["detail"]
    assert "next_step" in found["gpu_engine_vs_eager"]
    assert found["gpu_engine_vs_best_torch"]["met"] is False and "torch-compile" in found["gpu_engine_vs_best_torch"]["description"]
    assert found["gpu_engine_memory"]["met"] is True
    assert found["video_vs_model_only"]["met"] is False and found["video_vs_model_only"]["value"] == pytest.approx(0.75)
    assert found["cpu_ort_vs_eager_256x256"]["met"] is None
    cpu_doc = {"system": {"gpu": None, "device": "CPU"}, "video": {"skipped": "not requested"}, "results": [
        _row("torch-eager", (1, 256, 256), 100.0), _row("onnxruntime", (1, 256, 256), 80.0),
        _row("torch-eager", (1, 720, 1280), 1000.0), _row("onnxruntime", (1, 720, 1280), 1250.0)]}
    found = {t["id"]: t for t in evaluate(cpu_doc)}
    assert found["cpu_ort_vs_eager_256x256"]["met"] is True
    assert found["cpu_ort_vs_eager_720x1280"]["met"] is False and "missed by 20%" in found["cpu_ort_vs_eager_720x1280"]["detail"]
    assert found["gpu_engine_vs_eager"]["detail"] == "not evaluated: no GPU in this run"


def test_generated_clip_is_real_h264(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 64, 96, frames=5, source=SAMPLES / "cones.png")
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1  # it pans: frames differ


@pytest.mark.gpu
def test_gpu_run_times_the_engine_with_a_split_and_device_memory(export_dir, tmp_path):
    done = kanet("bench", "--checkpoint", str(export_dir["checkpoint"]), "--resolution", "64x64", "--iterations", "2",
                 "--warmup", "1", "--batch", "1", "--no-video", "--no-progress", "--out", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    doc = load_results(tmp_path / "results.json")
    rows = {r["backend"]: r for r in doc["results"]}
    assert doc["system"]["gpu"]["name"] and rows["tensorrt"]["precision"] == "fp16"
    assert rows["tensorrt"]["split_ms"]["h2d_ms"] > 0 and rows["tensorrt"]["memory"]["device_peak_mib"] > 0
    assert rows["torch-eager"]["memory"]["device_peak_mib"] > 0 and doc["engine"]["mib"] > 0
