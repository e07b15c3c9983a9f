"""The GPU path's decisions that a CPU machine can check, and (GPU-marked) what only a GPU can show."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.errors import DehazeError

REPO = Path(__file__).resolve().parents[1]


def kanet(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def max_shift_model(path: Path) -> Path:
    """uint8 frames -> frames + (255 - the frame's per-channel maximum): exact integers, and every output
    value depends on the whole frame, so a stale shape, stream or address shows in the result."""
    frames_in = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["n", "h", "w", 3])
    frames_out = helper.make_tensor_value_info("dehazed", TensorProto.UINT8, ["n", "h", "w", 3])
    nodes = [helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMax", ["x"], ["peak"], axes=[1, 2], keepdims=1),
             helper.make_node("Sub", ["c255", "peak"], ["gap"]),
             helper.make_node("Add", ["x", "gap"], ["y"]),
             helper.make_node("Cast", ["y"], ["dehazed"], to=TensorProto.UINT8)]
    c255 = helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0])
    graph = helper.make_graph(nodes, "max_shift", [frames_in], [frames_out], initializer=[c255])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def max_shift(frames: np.ndarray) -> np.ndarray:
    return frames + (255 - frames.max(axis=(-3, -2), keepdims=True))


def cuda_torch():
    """torch with CUDA, or a skip saying what is missing."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"this PyTorch ({torch.__version__}) cannot use the GPU (a CPU build, or a driver it does not "
                    "support): device arrays cannot be made")
    return torch


@pytest.fixture(scope="module")
def gpu_engine(tmp_path_factory) -> Path:
    """The max-shift model as an FP32 engine for GPU 0, batch 1-2, 48 x 48 .. 128 x 128."""
    from runtime.dehazer import engine_unusable

    why = engine_unusable(0)  # the precise reason: no GPU, an old driver, no TensorRT for this GPU
    if why:
        pytest.skip(why)
    from export.engine import BuildOptions, Profile, build_engine, import_tensorrt

    folder = tmp_path_factory.mktemp("gpu_engine")
    _, flavour = import_tensorrt()
    options = BuildOptions(Profile((1, 48, 48), (1, 64, 64), (2, 128, 128)),
                           compute_capabilities=("current",) if flavour == "tensorrt_rtx" else ())
    manifest = build_engine(max_shift_model(folder / "max_shift.onnx"), folder / "max_shift.plan", options, "fp32")
    return Path(manifest.engine.path)


def load_backend(plan: Path, **kwargs):
    from runtime.engine_backend import EngineBackend
    from runtime.manifest import read_manifest

    return EngineBackend(plan, read_manifest(plan), **kwargs)


@pytest.fixture
def backend(gpu_engine):
    """The small max-shift engine loaded on GPU 0, closed after the test."""
    loaded = load_backend(gpu_engine)
    yield loaded
    loaded.close()


def test_build_for_sm90_with_tensorrt_rtx_says_install_full_tensorrt(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    result = kanet("build", str(tiny_onnx), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                   "--compute-capability", "SM90")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "TensorRT-RTX does not support this GPU (SM90)" in lines[0] and "-e '.[tensorrt]'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_no_driver_means_no_gpu_and_an_old_driver_is_an_error():
    from cuda.bindings import runtime as cudart

    from runtime.cuda import device_count, device_count_error

    error = cudart.cudaError_t
    # This machine: no NVIDIA driver, so cuda-bindings reports cudaErrorInsufficientDriver with driver version 0.
    if cudart.cudaDriverGetVersion()[1] == 0:
        assert cudart.cudaGetDeviceCount()[0] == error.cudaErrorInsufficientDriver
        assert device_count() == 0
    assert device_count_error(error.cudaErrorNoDevice, 13000, 13050) is None
    why = device_count_error(error.cudaErrorInsufficientDriver, 12040, 13050)
    assert why.startswith("CUDA error cudaErrorInsufficientDriver") and "CUDA 12.4" in why and "R580" in why
    assert "tensorrt-cu12" in why


def test_fp32_builds_clear_tf32_fp16_builds_keep_the_default():
    from export.engine import BuildOptions, builder_config, import_tensorrt

    trt, _ = import_tensorrt()
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    assert builder.create_builder_config().get_flag(trt.BuilderFlag.TF32)  # the default this guards against
    assert not builder_config(trt, builder, BuildOptions(), "fp32").get_flag(trt.BuilderFlag.TF32)
    assert builder_config(trt, builder, BuildOptions(), "fp16").get_flag(trt.BuilderFlag.TF32)


def test_engine_cache_key_depends_on_the_gpu_targets():
    from export.engine import BuildOptions

    options = BuildOptions()
    assert options.key("sha", "tensorrt", "10.9", ["SM90"]) != options.key("sha", "tensorrt", "10.9", ["SM89"])


@pytest.mark.gpu
def test_full_tensorrt_manifest_records_this_gpu(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt", reason="full TensorRT is not installed")
    from export.engine import BuildOptions, Profile, build_engine
    from runtime.cuda import compute_capability

    options = BuildOptions(Profile((1, 64, 64), (1, 64, 64), (1, 64, 64)))
    manifest = build_engine(tiny_onnx, tmp_path / "tiny.plan", options, prefer="tensorrt")
    assert manifest.targets == [compute_capability(0)]


def _cai(**extra) -> dict:
    return {"shape": (2, 8, 8, 3), "typestr": "|u1", "data": (0x7F0000000100, False), "strides": None,
            "version": 3, **extra}


def test_device_frames_wait_on_the_stream_the_interface_names_else_the_legacy_default_stream():
    from cuda.bindings import runtime as cudart

    from runtime.device_frames import LEGACY_DEFAULT_STREAM, PER_THREAD_DEFAULT_STREAM, device_frames

    assert (LEGACY_DEFAULT_STREAM, PER_THREAD_DEFAULT_STREAM) == (int(cudart.cudaStreamLegacy),
                                                                  int(cudart.cudaStreamPerThread))
    torch_like = _cai(version=2)  # torch exports v2: no "stream" key at all
    assert device_frames(torch_like).wait_on == LEGACY_DEFAULT_STREAM
    assert device_frames(_cai(stream=None)).wait_on is None  # v3: the producer says nothing is pending
    assert device_frames(_cai(stream=2)).wait_on == PER_THREAD_DEFAULT_STREAM
    assert device_frames(_cai(stream=0x5555AAAA)).wait_on == 0x5555AAAA
    with pytest.raises(DehazeError, match="stream 0 is invalid"):
        device_frames(_cai(stream=0))
    frames = device_frames(_cai())
    assert (frames.ptr, frames.shape, frames.nbytes) == (0x7F0000000100, (2, 8, 8, 3), 384)


@pytest.mark.gpu
def test_engine_waits_for_torch_work_on_the_legacy_default_stream(backend):
    torch = cuda_torch()
    pattern = np.random.default_rng(3).integers(0, 200, (1, 96, 96, 3), dtype=np.uint8)
    source = torch.from_numpy(pattern).cuda()
    frames = torch.zeros_like(source)
    torch.cuda._sleep(200_000_000)  # keeps the default stream busy ~0.1 s: an unordered read sees zeros
    frames.copy_(source)
    out = backend.run_device(frames).to_host()
    np.testing.assert_array_equal(out, max_shift(pattern))


def test_device_frames_off_the_256_byte_grid_are_staged():
    from runtime.device_frames import ALIGNMENT, device_frames

    base = 0x7F0000000000  # cudaMalloc returns 256-byte aligned memory
    assert ALIGNMENT == 256 and device_frames(_cai(data=(base, False))).aligned
    frame_bytes = 8 * 8 * 3  # frames[1:] of an N x 8 x 8 x 3 batch starts one frame (192 bytes) in
    assert not device_frames(_cai(data=(base + frame_bytes, False))).aligned
    assert device_frames(_cai(data=(base + 4 * frame_bytes, False))).aligned  # 768 = 3 x 256


@pytest.mark.gpu
def test_engine_reads_a_misaligned_view_through_the_aligned_buffer(backend):
    torch = cuda_torch()
    pattern = np.random.default_rng(4).integers(0, 200, (3, 56, 72, 3), dtype=np.uint8)
    frames = torch.from_numpy(pattern).cuda()
    view = frames[1:]  # 56 * 72 * 3 = 12096 bytes in: not a multiple of 256
    assert view.data_ptr() % 256
    np.testing.assert_array_equal(backend.run_device(view).to_host(), max_shift(pattern[1:]))
    np.testing.assert_array_equal(backend.run_device(frames[0]).to_host(), max_shift(pattern[0]))


def test_device_frames_must_lie_on_the_engines_gpu():
    from cuda.bindings import runtime as cudart

    from runtime.device_frames import placement_problem

    kinds = cudart.cudaMemoryType
    assert placement_problem(kinds.cudaMemoryTypeDevice, 1, 1) is None
    assert placement_problem(kinds.cudaMemoryTypeManaged, 0, 1) is None
    assert "on GPU 0, the engine runs on GPU 1" in placement_problem(kinds.cudaMemoryTypeDevice, 0, 1)
    for host in (kinds.cudaMemoryTypeHost, kinds.cudaMemoryTypeUnregistered):
        assert "host memory" in placement_problem(host, 0, 0)


class _HostFrames:
    """Host memory claiming to be device memory, as a buggy producer might."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.__cuda_array_interface__ = {"shape": array.shape, "typestr": "|u1", "data": (array.ctypes.data, False),
                                         "version": 3, "stream": None}


@pytest.mark.gpu
def test_engine_refuses_host_memory_passed_as_device_frames(backend):
    with pytest.raises(DehazeError, match="host memory"):
        backend.run_device(_HostFrames(np.zeros((64, 64, 3), np.uint8)))


@pytest.mark.gpu
def test_engine_on_a_second_gpu_writes_there_and_refuses_frames_from_another(gpu_engine):
    from cuda.bindings import runtime as cudart

    from runtime.cuda import check, compute_capability, device_count

    torch = cuda_torch()
    if device_count() < 2 or compute_capability(1) != compute_capability(0):
        pytest.skip("needs two GPUs of the same compute capability")
    backend = load_backend(gpu_engine, device=1)
    try:
        pattern = np.random.default_rng(5).integers(0, 200, (64, 64, 3), dtype=np.uint8)
        torch.cuda.set_device(0)  # the caller's current GPU is not the engine's
        out = backend.run_device(torch.from_numpy(pattern).to("cuda:1"))
        assert check(cudart.cudaPointerGetAttributes(out.ptr)).device == 1
        np.testing.assert_array_equal(out.to_host(), max_shift(pattern))
        with pytest.raises(DehazeError, match="on GPU 0, the engine runs on GPU 1"):
            backend.run_device(torch.from_numpy(pattern).to("cuda:0"))
    finally:
        backend.close()


def test_out_of_gpu_memory_says_what_was_needed_and_what_to_change():
    from runtime.engine_backend import memory_advice

    gib = 1 << 30
    text = memory_advice(9 * gib, 2 * gib, 24 * gib, (4, 1088, 1920))
    assert "needs 9,216 MiB of activation memory for 4x1088x1920 batches" in text
    assert "2,048 of 24,576 MiB are free" in text and "--max-side" in text and "smaller --max" in text


@pytest.mark.gpu
def test_activation_memory_follows_the_batch_shape_not_the_profile_maximum(backend):
    small = np.random.default_rng(6).integers(0, 200, (1, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(backend.run(small)[0], max_shift(small))
    after_small = backend.activation_bytes
    assert after_small <= int(backend._engine.device_memory_size_v2)
    large = np.random.default_rng(7).integers(0, 200, (2, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(backend.run(large)[0], max_shift(large))
    assert backend.activation_bytes >= after_small
    np.testing.assert_array_equal(backend.run(small)[0], max_shift(small))  # grown memory serves small ones


def rtx_engine(gpu_engine: Path) -> Path:
    from runtime.manifest import read_manifest

    if read_manifest(gpu_engine)["tensorrt"]["flavour"] != "tensorrt_rtx":
        pytest.skip("full TensorRT is installed: only TensorRT-RTX keeps a runtime cache")
    gpu_engine.with_suffix(".runtime.cache").unlink(missing_ok=True)
    return gpu_engine


@pytest.mark.gpu
def test_tensorrt_rtx_runtime_cache_is_saved_on_close_not_per_shape(gpu_engine):
    plan = rtx_engine(gpu_engine)
    cache = plan.with_suffix(".runtime.cache")
    backend = load_backend(plan)
    for shape in ((1, 48, 48, 3), (2, 96, 128, 3)):
        frames = np.random.default_rng(8).integers(0, 200, shape, dtype=np.uint8)
        np.testing.assert_array_equal(backend.run(frames)[0], max_shift(frames))
        assert not cache.exists()  # nothing written under the inference lock
    backend.close()
    assert cache.stat().st_size > 0


@pytest.mark.gpu
def test_tensorrt_rtx_runtime_cache_is_saved_at_exit_without_close(gpu_engine):
    plan = rtx_engine(gpu_engine)
    script = ("import sys, numpy as np; from runtime.engine_backend import EngineBackend; "
              "from runtime.manifest import read_manifest; p = __import__('pathlib').Path(sys.argv[1]); "
              "b = EngineBackend(p, read_manifest(p)); b.run(np.zeros((1, 64, 64, 3), np.uint8))")
    done = subprocess.run([sys.executable, "-c", script, str(plan)], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert plan.with_suffix(".runtime.cache").stat().st_size > 0


@pytest.mark.gpu
def test_close_frees_everything_once_and_a_closed_engine_says_so(gpu_engine):
    from export.parity import _candidate

    backend = load_backend(gpu_engine)
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    backend.run(frames)
    backend.close()
    backend.close()  # idempotent
    assert backend.closed
    with pytest.raises(DehazeError, match="the engine was closed"):
        backend.run(frames)
    candidate = _candidate(gpu_engine, "auto")  # parity's engine runner closes its engine too
    candidate(frames)
    candidate.close()
    with pytest.raises(DehazeError, match="the engine was closed"):
        candidate(frames)


@pytest.mark.gpu
def test_graph_replay_matches_plain_enqueues_when_shapes_alternate(gpu_engine):
    """A -> B -> A -> A on one context: graphs (ours on full TensorRT, its own on TensorRT-RTX) against plain
    enqueues, and both against the exact answer."""
    rng = np.random.default_rng(9)
    batches = {"A": rng.integers(0, 200, (1, 64, 80, 3), dtype=np.uint8),
               "B": rng.integers(0, 200, (2, 96, 128, 3), dtype=np.uint8)}
    graphs, plain = load_backend(gpu_engine), load_backend(gpu_engine, cuda_graphs=False)
    try:
        for name in "AABAAB":
            frames = batches[name]
            replayed, enqueued = graphs.run(frames)[0], plain.run(frames)[0]
            np.testing.assert_array_equal(replayed, enqueued, err_msg=f"shape {name}")
            np.testing.assert_array_equal(replayed, max_shift(frames), err_msg=f"shape {name}")
    finally:
        graphs.close()
        plain.close()


def test_auto_falls_back_to_the_cpu_with_the_reason_where_cuda_cannot_use_the_gpu():
    from cuda.bindings import runtime as cudart

    from runtime.cuda import CudaUnusable, device_count, device_count_error
    from runtime.devices import DeviceChoice, choose_device

    def old_driver() -> int:  # what device_count raises on an R535 driver (CUDA 12.2) under the CUDA 13 runtime
        raise CudaUnusable(device_count_error(cudart.cudaError_t.cudaErrorInsufficientDriver, 12020, 13050))

    choice = choose_device("auto", old_driver)
    assert (choice.device, choice.gpus) == ("cpu", 0)
    assert choice.note.startswith("CUDA error cudaErrorInsufficientDriver") and choice.note.endswith("on the CPU")
    with pytest.raises(CudaUnusable, match="R580"):
        choose_device("cuda:0", old_driver)  # a GPU asked for by name: no silent fallback
    assert choose_device("cpu", old_driver) == DeviceChoice("cpu", 0, None)
    assert choose_device("auto") == DeviceChoice("auto", device_count(), None)  # this machine, for real
