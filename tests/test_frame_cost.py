"""The warning for frames larger than a back-end handles comfortably: expected time and memory from
`kanet bench` results of that back-end (the table shipped in the package), and a --max-side that fits, once."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.cost_table import table_from
from kanet.cli import main
from runtime import frame_cost
from runtime.frame_cost import estimate, oversize_warning

CPU = "onnxruntime:CPUExecutionProvider"


def _results(folder: Path, gpu: dict | None, rows: list[tuple[str, int, int, float, float]]) -> None:
    memory = "device_peak_mib" if gpu else "host_rss_mib"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "system": {"gpu": gpu, "cpu": {"model": "Test CPU"}, "started_at": "2026-12-04T00:00:00+00:00"},
        "results": [{"backend": b, "batch": 1, "height": h, "width": w, "latency_ms": {"p50": ms}, "memory": {memory: mib}}
                    for b, h, w, ms, mib in rows]}))


def test_time_and_memory_are_extrapolated_from_the_bench_figures_of_that_back_end(tmp_path):
    _results(tmp_path / "cpu-run", None, [("onnxruntime", 1000, 1000, 2000, 1000), ("onnxruntime", 1000, 2000, 8000, 2000),
                                           ("torch-eager", 2000, 2000, 1, 1)])
    _results(tmp_path / "gpu-run", {"name": "Test GPU"}, [("onnxruntime", 2000, 2000, 10, 10)])
    table = table_from(tmp_path)
    assert list(table) == ["onnxruntime/cpu", "onnxruntime/gpu"]  # torch-eager is no back-end of `kanet run`
    cost = estimate(2000, 2000, CPU, table)
    # time: the growth between the two sizes is quadratic (4x for 2x the pixels); memory: per pixel
    assert cost.seconds == pytest.approx(32) and cost.gib == pytest.approx(4000 / 1024)
    message = oversize_warning(2000, 2000, CPU, table)
    assert "2000x2000 (4.0 MPix) are larger than the 2.1 MPix" in message
    assert "expect about 32 s and 3.9 GiB per frame (extrapolated from kanet bench at 1000x2000 on Test CPU: cpu-run)" \
        in message
    assert "--max-side 1408" in message  # 2000 * sqrt(2.1 / 4), down to a multiple of 64: within 2.1 MPix


def test_the_shipped_table_is_the_one_the_committed_bench_results_give():
    """runtime/frame_cost.json travels with the package (no benchmarks/results there); it must not drift."""
    assert frame_cost.shipped() == table_from(), "run `python -m benchmarks.cost_table` and commit the table"
    assert "extrapolated from kanet bench at 1080x1920 on AMD EPYC" in oversize_warning(1536, 2048, CPU)


def test_without_figures_a_back_end_gets_the_advice_only():
    gpu = oversize_warning(4320, 7680, "tensorrt_rtx 1.7.1", {})
    assert "no kanet bench results" in gpu and "--max-side 3840" in gpu


def test_openvino_is_a_cpu_back_end_with_figures_of_its_own(tmp_path):
    _results(tmp_path / "cpu-run", None, [("onnxruntime", 1000, 1000, 2000, 1000), ("openvino", 1000, 1000, 500, 250)])
    table = table_from(tmp_path)
    message = oversize_warning(2000, 2000, "openvino 2026.4.1:CPU", table)
    assert "larger than the 2.1 MPix" in message  # the CPU's comfortable size, not a GPU's 8.3
    assert estimate(2000, 2000, "openvino 2026.4.1:CPU", table).gib == pytest.approx(1000 / 1024)


def test_frames_within_the_comfortable_size_get_no_warning():
    assert oversize_warning(1088, 1920, CPU, {}) is None
    assert oversize_warning(2160, 3840, "tensorrt 10.9.0", {}) is None


def test_kanet_run_warns_once_and_not_when_max_side_fits(frame_onnx, tmp_path, caplog, monkeypatch):
    """The real model on CPU, its comfortable size lowered (as _profiled in test_runtime lowers a profile)
    so that small frames stand for large ones."""
    monkeypatch.setitem(frame_cost.COMFORTABLE_MPIX, "cpu", 0.005)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (96, 128, 3), np.uint8))
    caplog.set_level(logging.WARNING, logger="runtime")

    def warnings(*extra: str) -> list[str]:
        caplog.clear()
        assert main(["run", "--model", str(frame_onnx), "--source", str(photos), "--output",
                     str(tmp_path / f"out{len(extra)}"), *extra]) == 0
        return [r.getMessage() for r in caplog.records if "handles comfortably" in r.getMessage()]

    (message,) = warnings()
    assert message.startswith("frames of 96x128 (0.0 MPix)") and "--max-side 64" in message
    assert warnings("--max-side", "64") == []
