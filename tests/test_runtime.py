"""runtime.Dehazer on a real exported frame-I/O ONNX model (ONNX Runtime, CPU); engines on a GPU."""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import HAS_GPU, SAMPLES
from runtime import DehazeError, Dehazer
from runtime import images as runtime_images
from runtime.dehazer import engine_unusable
from runtime.errors import KanetError
from runtime.onnx_backend import OnnxBackend
from runtime.tiling import run_tiled, tile_starts


@pytest.fixture(scope="module")
def dehazer(frame_onnx) -> Dehazer:
    """The ONNX model on ONNX Runtime, whose session these tests compare against frame for frame."""
    return Dehazer.load(frame_onnx, backend="onnxruntime")


@pytest.fixture(scope="module")
def session(frame_onnx) -> ort.InferenceSession:
    return ort.InferenceSession(str(frame_onnx), providers=["CPUExecutionProvider"])


def _frames(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _profiled(frame_onnx: Path, min_shape=(1, 33, 33), max_shape=None) -> OnnxBackend:
    """The real ONNX model held to an engine-like profile, so the profile logic runs on CPU."""
    backend = OnnxBackend(frame_onnx)
    backend.min_shape, backend.max_shape = min_shape, max_shape
    return backend


def test_describes_itself(dehazer, frame_onnx):
    assert dehazer.backend == "onnxruntime:CPUExecutionProvider" and dehazer.chosen is None  # as asked, no choice
    assert dehazer.precision == "fp32" and dehazer.max_shape is None
    assert Dehazer.load(frame_onnx.parent / "kanet_fp16.onnx").precision == "fp16"
    assert Dehazer.load(frame_onnx.parent).precision == "fp32"  # an export folder: its FP32 ONNX on CPU


@pytest.mark.parametrize("shape", [(48, 64), (33, 47), (61, 90)])
def test_single_frame_equals_the_model(dehazer, session, shape):
    frame = _frames(*shape, seed=shape[1])
    out = dehazer(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, session.run(None, {"frames": frame[None]})[0][0])


def test_batch_list_and_timings(dehazer, session):
    batch = _frames(3, 40, 56)
    out, timings = dehazer.infer_timed(batch)
    np.testing.assert_array_equal(out, session.run(None, {"frames": batch})[0])
    assert timings.compute_ms > 0 and timings.total_ms == timings.compute_ms
    assert timings.h2d_ms == timings.d2h_ms == 0  # host back-ends copy nothing
    mixed = [batch[0], _frames(50, 35, seed=1), batch[1]]  # two sizes: grouped per size, order kept
    results = dehazer(mixed)
    assert [r.shape for r in results] == [f.shape for f in mixed]
    np.testing.assert_array_equal(results[2], out[1])
    np.testing.assert_array_equal(results[1], dehazer(mixed[1]))


def _padded_reference(session, frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The model on `frame` mirror-padded (np.pad symmetric, bottom and right) to height x width, cropped back."""
    h, w = frame.shape[:2]
    padded = np.pad(frame[None], ((0, 0), (0, height - h), (0, width - w), (0, 0)), mode="symmetric")
    return session.run(None, {session.get_inputs()[0].name: padded})[0][0, :h, :w]


def test_frames_below_33_are_padded_and_cropped_back(dehazer, session):
    frame = _frames(20, 31, seed=4)
    np.testing.assert_array_equal(dehazer(frame), _padded_reference(session, frame, 33, 33))


def test_profile_splits_batches_and_pads_small_frames(frame_onnx, dehazer, session):
    batch = _frames(5, 48, 64, seed=3)
    limited = Dehazer(_profiled(frame_onnx, min_shape=(2, 48, 48), max_shape=(2, 64, 80)))
    out = limited(batch)  # 5 frames through a max batch of 2: 2 + 2 + 1 padded to the min batch of 2
    assert np.abs(out.astype(int) - dehazer(batch).astype(int)).max() <= 1
    short = _frames(40, 64, seed=6)  # height below the profile minimum: padded to 48, cropped back
    np.testing.assert_array_equal(limited(short), _padded_reference(session, short, 48, 64))


def test_conversions_warn_once_in_one_line(dehazer, caplog, monkeypatch):
    monkeypatch.setattr(runtime_images, "_noted", set())
    gray16 = (np.random.default_rng(0).integers(0, 65536, (40, 48))).astype(np.uint16)
    rgba = np.dstack([_frames(40, 48), np.full((40, 48), 255, np.uint8)])
    with caplog.at_level(logging.WARNING, logger="runtime"):
        out_gray = dehazer(gray16)
        dehazer(gray16)
        out_rgba = dehazer(rgba)
    assert out_gray.shape == out_rgba.shape == (40, 48, 3)
    np.testing.assert_array_equal(out_rgba, dehazer(rgba[:, :, :3]))
    gray8 = np.rint(gray16 / 257).astype(np.uint8)
    np.testing.assert_array_equal(out_gray, dehazer(np.dstack([gray8] * 3)))
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("16-bit frames are converted to 8 bits") == 1
    assert "grayscale frames are converted to BGR" in messages
    assert "BGRA frames are converted to BGR (alpha dropped)" in messages
    assert all("\n" not in m for m in messages)


@pytest.mark.parametrize("frames, expect", [
    (np.zeros((40, 40, 3), np.float32), "expected uint8 (or 16-bit) pixels, got float32"),
    (np.zeros((40, 40, 5), np.uint8), "expected H x W x 3 BGR (or gray / BGRA), got shape (40, 40, 5)"),
    ([np.zeros((40, 40, 2), np.uint8)], "frame 0: expected H x W x 3"),
    ("frame.png", "expected a numpy array, got str"),
])
def test_wrong_frames_are_clear_errors(dehazer, frames, expect):
    with pytest.raises(DehazeError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        dehazer(frames)


def test_device_is_one_parser_and_cpu_keeps_to_the_cpu(frame_onnx, exported):
    from runtime.dehazer import resolve_model
    from runtime.devices import gpu_index, parse_device

    for text, parsed in [("auto", "auto"), ("CPU", "cpu"), ("0", "cuda:0"), (1, "cuda:1"), ("cuda", "cuda:0"),
                         ("cuda:2", "cuda:2")]:
        assert parse_device(text) == parsed
    assert [gpu_index(d) for d in ("auto", "cpu", "cuda:0", "cuda:3")] == [0, None, 0, 3]
    for bad in ("gpu", "cuda:", "-1", "cuda:x"):
        with pytest.raises(KanetError, match="expected auto, cpu, a GPU index N, cuda or cuda:N"):
            parse_device(bad)
    assert Dehazer.load(frame_onnx, "onnxruntime", device="cpu").backend == "onnxruntime:CPUExecutionProvider"
    assert resolve_model(exported["dir"], "auto", "cpu").name == "kanet_fp32.onnx"  # not the engine, even on a GPU
    with pytest.raises(DehazeError, match="runs on a GPU; --device cpu runs the ONNX model"):
        Dehazer.load(exported["dir"] / "kanet_fp16.plan", device="cpu")


def test_auto_runs_onnx_models_on_openvino_without_a_gpu_and_says_why(frame_onnx, exported):
    """--backend auto: ONNX Runtime's GPU provider where a GPU is usable, else OpenVINO (FP32 models, when
    installed), else ONNX Runtime's CPU provider; `.chosen` names what runs and each better back-end passed over."""
    has_openvino = importlib.util.find_spec("openvino") is not None
    cpu = Dehazer.load(frame_onnx, device="cpu")
    if has_openvino:
        assert cpu.backend.startswith("openvino ") and cpu.precision == "fp32"
        assert cpu.chosen == "kanet_fp32.onnx on OpenVINO's CPU plugin (not on a GPU: --device cpu)"
    else:
        assert cpu.backend == "onnxruntime:CPUExecutionProvider" and "OpenVINO is not installed" in cpu.chosen
    with Dehazer.load(exported["dir"], device="cpu", half=True) as half:  # OpenVINO runs the FP32 model only
        assert half.backend == "onnxruntime:CPUExecutionProvider" and half.precision == "fp16"
        assert half.chosen == ("kanet_fp16.onnx on ONNX Runtime's CPU provider (not on a GPU: --device cpu; "
                               "OpenVINO runs FP32 models)")
    if not HAS_GPU:  # an export folder with an engine, on a machine that cannot run it: each reason named
        with Dehazer.load(exported["dir"]) as folder:
            assert folder.chosen.startswith("kanet_fp32.onnx on ")
            assert f"(no engine: {engine_unusable(0)}; not on a GPU: " in folder.chosen
    assert Dehazer.load(frame_onnx, "onnxruntime").chosen is None


def test_auto_knows_an_export_folders_precision_without_reading_the_model(exported, monkeypatch):
    """The folder's file names say which model is FP32; only a file named alone is read to find out."""
    import runtime.dehazer

    def unread(path):
        raise AssertionError(f"{path} was read to learn its precision")

    monkeypatch.setattr(runtime.dehazer, "_onnx_precision", unread)
    with Dehazer.load(exported["dir"], device="cpu") as folder:
        assert folder.precision == "fp32" and folder.chosen.startswith("kanet_fp32.onnx on ")
    with pytest.raises(AssertionError, match="kanet_fp16.onnx was read"):
        Dehazer.load(exported["dir"] / "kanet_fp16.onnx", device="cpu")


def test_half_picks_the_fp16_model_or_refuses(frame_onnx, exported, tmp_path):
    folder = exported["dir"]
    assert Dehazer.load(folder, device="cpu").precision == "fp32"
    half = Dehazer.load(folder, device="cpu", half=True)
    assert half.precision == "fp16" and half.backend == "onnxruntime:CPUExecutionProvider"
    assert Dehazer.load(folder / "kanet_fp16.onnx", half=True).precision == "fp16"
    with pytest.raises(DehazeError, match="is an FP32 model and --half asks for FP16"):
        Dehazer.load(frame_onnx, half=True)
    fp32_only = tmp_path / "fp32_only"
    fp32_only.mkdir()
    shutil.copyfile(frame_onnx, fp32_only / frame_onnx.name)
    with pytest.raises(DehazeError, match="holds none of kanet_fp16.onnx .*--half takes the FP16 models only"):
        Dehazer.load(fp32_only, device="cpu", half=True)


def test_bad_models_are_clear_errors(tmp_path, frame_onnx):
    with pytest.raises(DehazeError, match="no such model file"):
        Dehazer.load(tmp_path / "none.onnx")
    (tmp_path / "kanet.pt").write_bytes(b"x")
    with pytest.raises(DehazeError, match="a checkpoint is exported first"):
        Dehazer.load(tmp_path / "kanet.pt")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(DehazeError, match="broken.onnx: ONNX Runtime cannot load the model"):
        Dehazer.load(tmp_path / "broken.onnx")  # auto hands an unreadable file to ONNX Runtime for its one line
    with pytest.raises(DehazeError, match="broken.onnx: ONNX Runtime cannot load the model"):
        Dehazer.load(tmp_path / "broken.onnx", backend="onnxruntime")
    with pytest.raises(DehazeError, match="the tensorrt backend runs engines"):
        Dehazer.load(frame_onnx, backend="tensorrt")
    with pytest.raises(DehazeError, match="backend 'cuda'"):
        Dehazer.load(frame_onnx, backend="cuda")
    # A tensor-I/O graph (float NCHW, as `kanet export --io tensor` writes) is refused with the fix.
    nchw = ["n", 3, "h", "w"]
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["input"], ["output"])], "tensor_io",
                                   [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, nchw)],
                                   [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, nchw)])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "tensor.onnx")
    with pytest.raises(DehazeError, match="export a frame-I/O model"):
        Dehazer.load(tmp_path / "tensor.onnx")


def test_tile_starts_cover_with_overlap():
    for length, tile, overlap in [(128, 80, 32), (176, 96, 32), (1000, 256, 16), (2160, 1088, 32), (50, 64, 8)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == max(0, length - tile)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # every overlap >= requested


def test_tile_blending_weights_sum_to_one():
    """With an identity 'model' the blended tiles must give back the frame exactly."""
    frames = _frames(2, 130, 201, seed=5)
    out = run_tiled(frames, (64, 80), 24, 3, lambda tiles: tiles.copy())
    np.testing.assert_array_equal(out, frames)


@pytest.mark.parametrize("axis", [1, 2], ids=["rows of tiles", "columns of tiles"])
def test_tiles_cross_fade_linearly_over_their_overlap(axis):
    """A fake model that paints each tile one constant, 60 steps apart from its neighbour's: inside each
    overlap the result must climb from one constant to the next in steps of at most 60 / fade (+1 for
    rounding). Equal weights would jump 30 at the overlap's edges, a hard cut 60 at one pixel."""
    length, tile, overlap, step = 200, 80, 24, 60
    shape = [1, 40, 40, 3]
    shape[axis] = length
    painted = []

    def paint(tiles: np.ndarray) -> np.ndarray:
        out = np.stack([np.full(t.shape, step * (len(painted) + i), np.uint8) for i, t in enumerate(tiles)])
        painted.extend(range(len(tiles)))
        return out

    size = (tile, 40) if axis == 1 else (40, tile)
    out = run_tiled(np.zeros(shape, np.uint8), size, overlap, 2, paint)
    line = (out[0, :, 0, 0] if axis == 1 else out[0, 0, :, 0]).astype(int)
    starts = tile_starts(length, tile, overlap)
    assert len(painted) == len(starts) == 4  # 0, 40, 80, 120: overlaps of 40
    for i, (a, b) in enumerate(zip(starts, starts[1:])):
        fade = a + tile - b  # the overlap of tiles i and i + 1
        inside = line[b:a + tile]
        assert abs(inside[0] - step * i) <= step / fade + 1 and abs(inside[-1] - step * (i + 1)) <= step / fade + 1
        assert np.abs(np.diff(line[b - 1:a + tile + 1])).max() <= step / fade + 1, inside
    assert (line[:starts[1]] == 0).all() and (line[starts[-2] + tile:] == step * (len(starts) - 1)).all()


def test_tiled_vs_untiled_seams(frame_onnx, dehazer):
    """A real photograph at 128 x 176, whole and in 2 x 3 tiles of 80 x 96 (as an engine with that profile
    maximum would tile it), overlap >= 32 blended linearly.

    Thresholds, measured on three of the samples with this seeded random-weight network: max 25
    and mean 1.5 (8-bit steps) per channel. Tiles differ from the whole frame everywhere, not only
    at seams, because KA-Net's attention sees the whole tile as context; the seam check is that the
    error along the seam lines is no worse than 1.5x the error elsewhere (measured 1.1x to 1.3x).
    """
    photo = cv2.resize(cv2.imread(str(SAMPLES / "bench.png")), (176, 128), interpolation=cv2.INTER_AREA)
    whole = dehazer(photo)
    tiled = Dehazer(_profiled(frame_onnx, max_shape=(4, 80, 96)), tile_overlap=32)(photo)  # tile=None: auto
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.max() <= 40 and diff.mean() <= 2.5, (diff.max(), diff.mean())
    seams = np.zeros(photo.shape[:2], bool)
    for starts, tile, axis in ((tile_starts(128, 80, 32), 80, 0), (tile_starts(176, 96, 32), 96, 1)):
        for a, b in zip(starts, starts[1:]):
            centre = (b + a + tile) // 2
            (seams[centre - 2:centre + 2] if axis == 0 else seams[:, centre - 2:centre + 2]).fill(True)
    per_pixel = diff.mean(axis=-1)
    assert per_pixel[seams].mean() <= 1.5 * per_pixel[~seams].mean()


def test_tiling_off_rejects_frames_over_the_profile(frame_onnx):
    limited = Dehazer(_profiled(frame_onnx, max_shape=(1, 64, 64)), tile=0)
    with pytest.raises(DehazeError, match="larger than the engine profile allows .64x64. and tiling is off"):
        limited(_frames(65, 64))
    assert limited(_frames(64, 64)).shape == (64, 64, 3)
    with pytest.raises(DehazeError, match="larger than the engine profile allows"):
        Dehazer(_profiled(frame_onnx, max_shape=(1, 64, 64)), tile=96)
    with pytest.raises(DehazeError, match="overlap 40 must be smaller"):
        Dehazer(_profiled(frame_onnx), tile=40, tile_overlap=40)(_frames(50, 100))


# -- engines (TensorRT / TensorRT-RTX) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_engine(frame_onnx, tmp_path_factory) -> Path:
    """A real FP16 engine with a small profile, built ahead of time (TensorRT-RTX builds without a GPU)."""
    from export.engine import BuildOptions, Profile, import_tensorrt
    from export.pipeline import engine_from_onnx
    from runtime.cuda import device_count

    _, flavour = import_tensorrt()
    targets = ("current",) if flavour == "tensorrt_rtx" and device_count() else ("SM89",)
    out = tmp_path_factory.mktemp("engine")
    options = BuildOptions(Profile((1, 48, 48), (1, 64, 80), (2, 96, 128)), compute_capabilities=targets)
    build = engine_from_onnx(frame_onnx.parent / "kanet_fp16_tensorrt.onnx", out, options, out / "cache", "fp16", [])
    return Path(build.manifest.engine.path)


def test_engine_checks_before_deserialising(small_engine, tmp_path):
    from runtime.cuda import device_count

    if device_count() == 0:
        with pytest.raises(DehazeError, match="needs an NVIDIA GPU.*run the ONNX model with ONNX Runtime instead"):
            Dehazer.load(small_engine)
    with pytest.raises(DehazeError, match="ONNX Runtime runs the .onnx models"):
        Dehazer.load(small_engine, backend="onnxruntime")
    other = tmp_path / "other.plan"
    shutil.copyfile(small_engine, other)
    manifest = json.loads(small_engine.with_suffix(".json").read_text())
    manifest["tensorrt"]["version"] = "0.9.0"
    other.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(DehazeError, match=r"built with \S+ 0\.9\.0.*rebuild it here with: kanet build"):
        Dehazer.load(other)
    other.with_suffix(".json").unlink()
    with pytest.raises(DehazeError, match="no manifest other.json"):
        Dehazer.load(other)


def _fp16_close(reference: np.ndarray, candidate: np.ndarray) -> None:
    diff = np.abs(reference.astype(float) - candidate.astype(float))
    psnr = 10 * math.log10(255 ** 2 / max(float((diff ** 2).mean()), 1e-12))
    assert psnr >= 45 and (diff <= 2).mean() >= 0.99, (psnr, (diff <= 2).mean())


@pytest.mark.gpu
def test_engine_matches_onnx_runtime_and_times_its_stages(small_engine, dehazer):
    engine = Dehazer.load(small_engine)
    assert engine.backend.startswith(("tensorrt ", "tensorrt_rtx ")) and engine.precision == "fp16"
    assert engine.max_shape == (2, 96, 128)
    batch = _frames(2, 72, 100, seed=7)
    out, timings = engine.infer_timed(batch)
    _fp16_close(dehazer(batch), out)
    again, timings = engine.infer_timed(batch)  # same shape: reused buffers (and a captured CUDA graph)
    np.testing.assert_array_equal(again, out)
    assert timings.h2d_ms > 0 and timings.compute_ms > 0 and timings.d2h_ms > 0
    assert timings.total_ms == pytest.approx(timings.h2d_ms + timings.compute_ms + timings.d2h_ms, rel=0.05)
    bigger = _frames(3, 96, 128, seed=8)  # buffers grow; a batch of 3 is split into 2 + 1
    _fp16_close(dehazer(bigger), engine(bigger))
    _fp16_close(dehazer(batch[0]), engine(batch[0]))
    large = _frames(150, 200, seed=9)  # over the profile: tiled
    assert engine(large).shape == large.shape
    engine.close()


@pytest.mark.gpu
def test_engine_takes_gpu_arrays_without_host_copies(small_engine, dehazer):
    import torch

    engine = Dehazer.load(small_engine)
    frames = _frames(2, 64, 80, seed=11)
    on_gpu = torch.from_numpy(frames).cuda()
    out = engine(on_gpu)
    result = torch.as_tensor(out, device="cuda")  # read through __cuda_array_interface__, no copy
    assert tuple(result.shape) == frames.shape and result.dtype == torch.uint8
    _fp16_close(dehazer(frames), result.cpu().numpy())
    np.testing.assert_array_equal(out.to_host(), result.cpu().numpy())
    engine.close()


@pytest.mark.gpu
def test_kanet_run_uses_the_engine(small_engine, tmp_path, capsys):
    from kanet.cli import main

    folder = tmp_path / "hazy"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), _frames(64, 80, seed=i))
    summary_file = tmp_path / "s.json"
    code = main(["run", "--model", str(small_engine), "--source", str(folder), "--output", str(tmp_path / "out"),
                 "--batch", "2", "--summary", str(summary_file)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(summary_file.read_text())
    assert summary["backend"].startswith(("tensorrt ", "tensorrt_rtx ")) and summary["frames_out"] == 3
    assert summary["inference"]["ms_per_frame"]["compute_ms"] > 0
