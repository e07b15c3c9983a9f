"""`kanet run --model grpc://... / http://...` against a real Triton Inference Server started here, on the CPU.

The server is the tritonserver binary that the nvidia-pytriton wheel bundles, with its Python back-end. The wheel
pins numpy < 2, so it lives in a virtual environment of its own, made once per machine under the temporary folder
($KANET_TEST_TRITON_VENV overrides where; about 40 s and 450 MB). It serves `kanet triton`'s CPU model, whose
ONNX Runtime back-end that build lacks, through tests/triton_python_model.py: the same ONNX on the same ONNX
Runtime version, so the frames must equal a local run's bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.http as triton_http

from conftest import REPO
from export.triton_repo import ONNX_CPU_MODEL, write_triton_repository
from runtime.errors import DehazeError
from runtime.triton_backend import ServerModel, parse_server_model

PYTRITON = "nvidia-pytriton==0.7.0"  # tritonserver 2.51 with the Python back-end and stubs for Python 3.8-3.13
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
MODEL_PY = Path(__file__).with_name("triton_python_model.py")
FLOAT_MODEL = "float_frames"  # a model with float input, which kanet must refuse


@dataclass(frozen=True)
class ServerInstall:
    python: Path    # the server venv's interpreter: its bin/ goes first on PATH, so the Python stub finds the venv
    binary: Path    # tritonserver
    backends: Path  # --backend-directory: python/ with libtriton_python.so and this Python's stub
    libs: Path      # the wheel's bundled shared libraries (LD_LIBRARY_PATH)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.python.parent}:{os.environ['PATH']}",
                "LD_LIBRARY_PATH": ":".join(filter(None, [str(self.libs), os.environ.get("LD_LIBRARY_PATH")]))}


@dataclass
class Server:
    process: subprocess.Popen
    http: int
    grpc: int
    metrics: int
    log: Path

    def url(self, protocol: str, model: str = ONNX_CPU_MODEL) -> str:
        return f"{protocol}://127.0.0.1:{getattr(self, protocol)}/{model}"


def _missing_libraries(install: ServerInstall, files: list[Path]) -> list[str]:
    found = []
    for path in files:
        done = subprocess.run(["ldd", str(path)], env=install.env(), capture_output=True, text=True)
        found += [f"{path.name} needs {line.split()[0]}" for line in done.stdout.splitlines() if "not found" in line]
    return found


def _install_server() -> ServerInstall:
    """The server's venv (made when missing: 'incomplete' while it is made, then 'ready') or pytest.skip saying why
    there is none."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(f"the nvidia-pytriton wheel's tritonserver is for Linux x86_64, not {sys.platform} "
                    f"{platform.machine()}")
    onnxruntime = f"onnxruntime=={version('onnxruntime')}"  # the project's: same kernels, same frames
    venv = Path(os.environ.get("KANET_TEST_TRITON_VENV") or Path(tempfile.gettempdir()) /
                f"kanet-tritonserver-py{PY}-{PYTRITON.replace('==', '-')}-{onnxruntime.replace('==', '-')}")
    python = venv / "bin" / "python"
    site = venv / "lib" / f"python{PY}" / "site-packages"
    dist = site / "pytriton" / "tritonserver"
    install = ServerInstall(python, dist / "bin" / "tritonserver", dist / "backends", site / "nvidia_pytriton.libs")
    stub = install.backends / "python" / "triton_python_backend_stub"
    if not (venv / "ready").is_file():
        if venv.exists() and not (venv / "incomplete").is_file():  # never delete a folder this test did not make
            pytest.skip(f"{venv} exists and is not a Triton server environment this test made; remove it or point "
                        "$KANET_TEST_TRITON_VENV elsewhere")
        shutil.rmtree(venv, ignore_errors=True)  # an interrupted set-up
        venv.mkdir(parents=True)
        (venv / "incomplete").touch()
        try:
            for command in ([sys.executable, "-m", "venv", str(venv)],
                            [str(python), "-m", "pip", "install", "--quiet", PYTRITON, onnxruntime]):
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
                if done.returncode:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    pytest.skip(f"cannot make the Triton server's environment in {venv}: {' '.join(command[2:4])} "
                                f"failed: {last}")
        except subprocess.TimeoutExpired:
            pytest.skip(f"making the Triton server's environment in {venv} took over 5 minutes")
        bundled = dist / "python_backend_stubs" / PY / "triton_python_backend_stub"
        if not bundled.is_file():
            pytest.skip(f"{PYTRITON} has no Python back-end stub for Python {PY} ({bundled})")
        shutil.copy(bundled, stub)  # where the back-end looks for it, as pytriton arranges in its workspace
        (venv / "incomplete").rename(venv / "ready")
    missing = _missing_libraries(install, [install.binary, stub])
    if missing:
        pytest.skip(f"the Triton server of {venv} cannot start here: {'; '.join(missing)}")
    return install


@pytest.fixture(scope="session")
def server_install() -> ServerInstall:
    return _install_server()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(install: ServerInstall, repo: Path, log: Path, ports: tuple[int, int, int] | None = None):
    """tritonserver on `repo` with the models the CPU can run, ready, on `ports` (HTTP, gRPC, metrics; default: free
    ones); stopped on the way out with what it started."""
    ports = ports or tuple(_free_port() for _ in range(3))
    command = [str(install.binary), f"--model-repository={repo}", f"--backend-directory={install.backends}",
               f"--http-port={ports[0]}", f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}",
               "--model-control-mode=explicit", f"--load-model={ONNX_CPU_MODEL}", f"--load-model={FLOAT_MODEL}",
               "--log-verbose=1"]  # verbose: the log names each stub's shared-memory region (see _stop)
    with log.open("w") as sink:
        # a session of its own: the Python stubs join its process group, so _stop reaches them after a crash too
        process = subprocess.Popen(command, env=install.env(), stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(process, *ports, log)
    try:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 120
        while not _ready(client):
            assert process.poll() is None, f"tritonserver exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"tritonserver not ready after 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield server
    finally:
        _stop(server)


def _stop(server: Server) -> None:
    """Kill the server and its Python stubs, which outlive a killed server, and remove the stubs' shared-memory
    regions, which a killed server leaves in /dev/shm. (SIGTERM would clean up too, but takes Triton's 30 s exit
    timeout on this build.)"""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    for region in set(re.findall(r"triton_python_backend_shm_region_[0-9a-f-]+", server.log.read_text())):
        Path("/dev/shm", region).unlink(missing_ok=True)


def _ready(client) -> bool:
    try:
        return client.is_server_ready()
    except Exception:  # not listening yet
        return False


@pytest.fixture(scope="module")
def model_repo(exported, tmp_path_factory) -> Path:
    """`kanet triton`'s repository of the seeded export, its CPU model run by the Python back-end, plus a model with
    float input frames."""
    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_triton_repository(exported["dir"], repo)
    model = repo / ONNX_CPU_MODEL
    config = (model / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config
    (model / "config.pbtxt").write_text(config.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    shutil.copy(MODEL_PY, model / "1" / "model.py")
    shutil.copytree(model, repo / FLOAT_MODEL, copy_function=os.link)
    float_config = config.replace('platform: "onnxruntime_onnx"', 'backend: "python"').replace(
        f'name: "{ONNX_CPU_MODEL}"', f'name: "{FLOAT_MODEL}"')
    (repo / FLOAT_MODEL / "config.pbtxt").unlink()  # a hard link: writing through it would change the CPU model's
    (repo / FLOAT_MODEL / "config.pbtxt").write_text(float_config.replace("TYPE_UINT8", "TYPE_FP32", 1))
    return repo


@pytest.fixture(scope="module")
def server(server_install, model_repo, tmp_path_factory):
    with running_server(server_install, model_repo, tmp_path_factory.mktemp("log") / "tritonserver.log") as running:
        yield running


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, Path]:
    """Two folders of hazy-looking frames of different sizes, one of them odd-sized (padded by the model)."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    folders = {}
    for label, (height, width, count) in {"a": (96, 128, 7), "b": (50, 70, 4)}.items():
        folders[label] = root / label
        folders[label].mkdir()
        for i in range(count):
            image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
            cv2.imwrite(str(folders[label] / f"{i:03d}.png"), (image * 0.6 + 90).astype(np.uint8))
    return folders


def kanet_run(*argv, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", "run", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def local_frames(frame_onnx, frames, tmp_path_factory) -> dict[str, bytes]:
    """What the same ONNX gives on ONNX Runtime here: the frames a server run must reproduce."""
    out = tmp_path_factory.mktemp("local") / "out"
    done = kanet_run("--model", frame_onnx, "--backend", "onnxruntime", "--device", "cpu", "--source", frames["a"],
                     "--source", frames["b"], "--output", out)
    assert done.returncode == 0, done.stderr
    return pngs(out)


def executed_batches(server: Server) -> dict[int, int]:
    """Batch size -> executions of the served model, as the server counts them."""
    stats = triton_http.InferenceServerClient(f"127.0.0.1:{server.http}").get_inference_statistics(ONNX_CPU_MODEL)
    (model,) = stats["model_stats"]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in model["batch_stats"]}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_kanet_run_on_a_triton_server_writes_the_local_models_frames(protocol, server, frames, local_frames,
                                                                     tmp_path):
    """Two sources at once, --batch 5 against a model that takes 2 a call: the server's frames equal ONNX Runtime's
    here, byte for byte, and no call exceeded the server's max_batch_size."""
    url = server.url(protocol)
    before = executed_batches(server)
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    done = kanet_run("--model", url, "--source", frames["a"], "--source", frames["b"], "--output", out,
                     "--batch", 5, "--summary", summary)
    assert done.returncode == 0, done.stderr
    assert "11 of 11 frames written" in done.stderr and f"triton:{url} fp32" in done.stderr, done.stderr
    assert pngs(out) == local_frames
    after = executed_batches(server)
    assert max(after) == 2 and sum(after.values()) > sum(before.values()), after  # kanet triton's max batch


def test_kanet_eval_scores_a_server_model_as_the_local_one(server, frame_onnx, frames, tmp_path):
    means = {}
    for label, model, flags in (("local", frame_onnx, ["--backend", "onnxruntime"]), ("server", server.url("grpc"), [])):
        done = subprocess.run([sys.executable, "-m", "kanet", "eval", "--hazy", str(frames["a"]), "--model", str(model),
                               *flags, "--no-dcp", "--out", str(tmp_path / label)], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        means[label] = json.loads((tmp_path / label / "eval.json").read_text())["means"]["KA-Net"]
    assert means["server"] == means["local"]


@pytest.fixture(scope="module")
def long_source(frame_onnx, tmp_path_factory) -> tuple[Path, Path]:
    """60 frames, several seconds of work, and what ONNX Runtime here makes of them."""
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(1)
    (root / "frames").mkdir()
    for i in range(60):
        cv2.imwrite(str(root / "frames" / f"{i:03d}.png"), rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    done = kanet_run("--model", frame_onnx, "--backend", "onnxruntime", "--device", "cpu", "--source", root / "frames",
                     "--output", root / "local")
    assert done.returncode == 0, done.stderr
    return root / "frames", root / "local"


def _run_until_3_written(model: str, source: Path, out: Path) -> subprocess.Popen:
    """`kanet run` started on `model`, once it has written 3 frames (so the server can be killed mid-run)."""
    run = subprocess.Popen([sys.executable, "-m", "kanet", "run", "--model", model, "--source", str(source),
                            "--output", str(out)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 3:
        assert run.poll() is None, f"kanet run ended ({run.returncode}) before the server was killed"
        assert time.monotonic() < deadline, "kanet run wrote fewer than 3 frames in 120 s"
        time.sleep(0.05)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_killed_mid_run_fails_the_run_in_one_line_keeping_the_frames_written(
        protocol, server_install, model_repo, long_source, tmp_path):
    """The run retries (4 times over 7.5 s), then ends with exit 1 and one line; the frames written stay as written."""
    source, local = long_source
    out = tmp_path / "out"
    with running_server(server_install, model_repo, tmp_path / "tritonserver.log") as server:
        run = _run_until_3_written(server.url(protocol), source, out)
        server.process.send_signal(signal.SIGKILL)
    started = time.monotonic()
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == 1, stderr
    assert stderr.splitlines()[-1].startswith(f"kanet run: error: {server.url(protocol)}: the server stopped answering "
                                              "("), stderr
    assert stderr.splitlines()[-1].endswith("still after 4 retries over 7.5 s"), stderr
    assert "Traceback" not in stderr and 7.0 < time.monotonic() - started < 30  # it waited for the server
    written = pngs(out)
    assert 3 <= len(written) < 60 and all(data == (local / name).read_bytes() for name, data in written.items())


@pytest.mark.slow
def test_a_server_restarted_mid_run_is_retried_and_the_run_completes(server_install, model_repo, long_source,
                                                                      tmp_path):
    source, local = long_source
    out = tmp_path / "out"
    with running_server(server_install, model_repo, tmp_path / "first.log") as first:
        run = _run_until_3_written(first.url("grpc"), source, out)
        first.process.send_signal(signal.SIGKILL)
    with running_server(server_install, model_repo, tmp_path / "second.log", (first.http, first.grpc, first.metrics)):
        stderr = run.communicate(timeout=120)[1]
    assert run.returncode == 0, stderr
    assert "60 of 60 frames written" in stderr
    assert pngs(out) == pngs(local)


@pytest.mark.parametrize("case", ["unreachable", "unknown model", "float input", "device"])
def test_a_server_model_that_cannot_serve_is_a_one_line_error(case, server, frames, tmp_path):
    model, extra, expected = {
        "unreachable": (f"grpc://127.0.0.1:{_free_port()}/{ONNX_CPU_MODEL}", [],
                        "no Triton server answers at 127.0.0.1:"),
        "unknown model": (server.url("http", "kanet_nope"), [],
                          "the server has no model 'kanet_nope' ready; its repository holds: "),
        "float input": (server.url("grpc", FLOAT_MODEL), [],
                        "the model input frames is TYPE_FP32 [-1, -1, -1, 3], not uint8 N x H x W x 3 frames"),
        "device": (server.url("grpc"), ["--device", "cpu"], "which decides how and where it runs; drop --device cpu"),
    }[case]
    done = kanet_run("--model", model, *extra, "--source", frames["b"], "--output", tmp_path / "out")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"kanet run: error: {model}") and expected in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_server_model_names_take_triton_default_ports_and_refuse_anything_else():
    assert parse_server_model("grpc://gpu-box/kanet_tensorrt") == ServerModel("grpc", "gpu-box:8001", "kanet_tensorrt")
    assert parse_server_model("http://[::1]:9000/m/") == ServerModel("http", "[::1]:9000", "m")
    for text, why in (("grpc://gpu-box:8001", ""), ("http://h:8000/model/1", ""), ("grpc://:8001/m", ""),
                      ("grpc://h:99999/m", "; the port is not a number from 0 to 65535")):
        with pytest.raises(DehazeError) as caught:
            parse_server_model(text)
        assert str(caught.value) == (f"{text}: expected grpc://HOST[:PORT]/MODEL or http://HOST[:PORT]/MODEL (a model "
                                     f"on a Triton server){why}")
