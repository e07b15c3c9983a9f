"""`kanet run` end to end on a real exported ONNX model: generated videos (with audio), image folders,
an HTTP stream that dies, two sources at once, corrupt and empty inputs, raw frames on stdout."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import REPO
from kanet.cli import main
from runtime import Dehazer

H, W, FPS = 48, 64, 10


def make_clip(path: Path, frames: int, audio: bool = True, container: str | None = None,
              gop: int | None = None) -> Path:
    """A small H.264 clip (moving bar over a changing colour) with a 440 Hz AAC tone, written with PyAV; `gop`: a
    keyframe exactly every `gop` frames (so the file can be cut), else the encoder's choice."""
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        if gop:
            video.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(frames):
            image = np.full((H, W, 3), (i * 8) % 256, np.uint8)
            image[:, : (i * 2) % W] = (40, 200, 90)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(video.encode(None))
        if sound is not None:
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * frames // FPS) / 16000)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    clip = make_clip(root / "clip.mp4", 30)
    stream = make_clip(root / "stream.ts", 40, audio=False, container="mpegts")
    corrupt = bytearray(clip.read_bytes())
    with av.open(str(clip)) as container:
        samples = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    for pos, size in samples[10:13]:  # three frames' data wiped: the container still lists them
        corrupt[pos:pos + size] = bytes(size)
    (root / "corrupt.mp4").write_bytes(bytes(corrupt))
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # moov atom lost
    return {"clip": clip, "stream": stream, "corrupt": root / "corrupt.mp4", "empty": root / "empty.mp4",
            "truncated": root / "truncated.mp4"}


@pytest.fixture
def http_stream(media):
    """Serve stream.ts over HTTP from a thread; `die` = how many first requests are cut off half-way."""
    servers = []

    def serve(die: int) -> str:
        data = media["stream"].read_bytes()
        requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if len(requests) <= die else data)  # then the socket closes

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/live.ts"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def kanet_run(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", *args])
    return code, capsys.readouterr().err


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _yuv420(image: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p").to_ndarray(format="bgr24")


def test_video_with_audio_through_a_subprocess_without_torch(frame_onnx, media, tmp_path):
    out, summary_file = tmp_path / "dehazed.mp4", tmp_path / "summary.json"
    code = ("import sys\nfrom kanet.cli import main\n"
            f"rc = main(['run', '--model', {str(frame_onnx)!r}, '--source', {str(media['clip'])!r}, "
            f"'--output', {str(out)!r}, '--summary', {str(summary_file)!r}])\n"
            "assert 'torch' not in sys.modules, 'kanet run imported torch'\nsys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["frames_in"] == summary["frames_out"] == 30 and summary["undecodable"] == 0
    assert summary["dropped_frames"] == 0 and summary["fps"] > 0
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p90"] <= summary["latency_ms"]["p99"]
    # --backend auto without a GPU: OpenVINO where installed (the README's set-up installs it), and the run says so
    auto = "openvino " if importlib.util.find_spec("openvino") else "onnxruntime:CPUExecutionProvider"
    assert summary["backend"].startswith(auto) and summary["precision"] == "fp32"
    assert "kanet run: --backend auto: kanet_fp32.onnx on " in result.stderr
    (source,) = summary["sources"]
    assert (source["status"], source["frames_in"], source["frames_out"], source["output"]) == ("ok", 30, 30, str(out))
    assert source["audio"] == "copied" and summary["status"] == "ok"
    assert "30 of 30 frames written" in result.stderr

    readable = read_frames(out)  # OpenCV reads it
    assert len(readable) == 30 and readable[0].shape == (H, W, 3)
    with av.open(str(out)) as container:
        written = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    expected = Dehazer.load(frame_onnx)(np.stack(read_frames(media["clip"])[8:13]))
    # The random network's output is colour noise: compare through the same 4:2:0 chroma subsampling
    # (alone 9 steps mean), so what remains is H.264 at CRF 18, and frame 10 must match its own input best.
    errors = [np.abs(written[10].astype(int) - _yuv420(e).astype(int)).mean() for e in expected]
    assert errors[2] < 3 and errors[2] == min(errors), errors
    with av.open(str(out)) as container:
        (audio,) = container.streams.audio
        assert audio.codec_context.name == "aac"
        seconds = sum(float(p.duration * p.time_base) for p in container.demux(audio) if p.duration)
    assert abs(seconds - 3.0) < 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dehazed.mp4", "summary.json"]  # no intermediate left


def test_image_folder_with_odd_inputs(frame_onnx, tmp_path, capsys, caplog):
    images = tmp_path / "hazy"
    images.mkdir()
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.png"), photo)
    cv2.imwrite(str(images / "b.jpg"), rng.integers(0, 256, (50, 71, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "gray16.png"), rng.integers(0, 65536, (40, 45), dtype=np.uint16))
    cv2.imwrite(str(images / "rgba.png"), rng.integers(0, 256, (36, 52, 4), dtype=np.uint8))
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "notes.md").write_text("not an image: ignored")
    out, summary_file = tmp_path / "clear", tmp_path / "s.json"
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(images), "--output", str(out),
                          "--summary", str(summary_file), "--side-by-side", "--batch", "3", "--device", "cpu")
    assert code == 0, err
    summary = json.loads(summary_file.read_text())
    assert (summary["frames_in"], summary["frames_out"], summary["undecodable"]) == (5, 4, 1)
    assert "broken.png: not a readable image" in summary["sources"][0]["errors"][0]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "gray16.png", "rgba.png"]
    side = cv2.imread(str(out / "a.png"))
    np.testing.assert_array_equal(side[:, :W], photo)
    np.testing.assert_array_equal(side[:, W:], Dehazer.load(frame_onnx)(photo))
    assert cv2.imread(str(out / "gray16.png")).shape == (40, 90, 3)


def test_audio_that_cannot_be_copied_is_reported(frame_onnx, media, tmp_path, capsys, caplog):
    """WebM takes no AAC: the video is kept without the audio, with one warning line, the reason in the
    summary and exit status 1 (not a silent video-only output with exit 0)."""
    out, summary_file = tmp_path / "out.webm", tmp_path / "s.json"
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(media["clip"]), "--output", str(out),
                          "--max-frames", "5", "--summary", str(summary_file))
    assert code == 1, err
    warnings = [r.getMessage() for r in caplog.records if "audio not copied" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "'webm' format does not support 'aac' codec" in warnings[0]
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "degraded" and summary["streams"]["audio_dropped"] == ["clip"]
    assert summary["sources"][0]["audio"] == "dropped: 'webm' format does not support 'aac' codec"
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 0 and sum(1 for _ in container.decode(video=0)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.webm", "s.json"]


def test_file_names_that_are_not_utf8(frame_onnx, tmp_path):
    """Linux names are bytes: b'\\xff.png' must be read and its output written (OpenCV's path API segfaults)."""
    images = tmp_path / "hazy"
    images.mkdir()
    odd = os.fsdecode(b"\xff\xfe haze.png")  # surrogate escapes: not valid UTF-8
    photo = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    (images / odd).write_bytes(cv2.imencode(".png", photo)[1].tobytes())
    (images / "plain.png").write_bytes(cv2.imencode(".png", photo)[1].tobytes())
    out = tmp_path / "clear"
    result = subprocess.run([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source", str(images),
                             "--output", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert sorted(os.listdir(os.fsencode(out))) == [b"plain.png", b"\xff\xfe haze.png"]
    written = cv2.imdecode(np.fromfile(out / odd, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(written, Dehazer.load(frame_onnx)(photo))


def _file_size_limit(limit: int):
    """For a child process: writes past `limit` bytes fail with EFBIG (as on a full disk) instead of killing it."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_failed_image_write_leaves_the_previous_file(frame_onnx, tmp_path):
    """The write fails part-way (file size limit): the final name keeps its old file, no partial file is left."""
    images, out = tmp_path / "hazy", tmp_path / "clear"
    images.mkdir(), out.mkdir()
    noise = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)  # ~9 KiB as PNG, twice side by side
    cv2.imwrite(str(images / "a.png"), noise)
    (out / "a.png").write_bytes(b"the previous run's output")
    result = subprocess.run([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source", str(images),
                             "--output", str(out), "--overwrite", "--side-by-side"], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                            preexec_fn=_file_size_limit(8192))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "a.png: could not be written (File too large)" in result.stderr.splitlines()[-1], result.stderr
    assert os.listdir(out) == ["a.png"] and (out / "a.png").read_bytes() == b"the previous run's output"


def make_noise_clip(path: Path, frames: int) -> Path:
    """Random pixels: a dehazed video of it stays large, so a small file size limit is hit mid-run."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize("where, limit, verb", [("writing frames", 40000, "write"), ("closing", 4096, "finish")])
def test_a_full_disk_while_writing_a_video_is_one_line(frame_onnx, media, tmp_path, where, limit, verb):
    """The file size limit strikes while frames are encoded, or only in the flush at close (the muxer buffers
    a small video): one line, exit 1, nothing under the output's name and no partial file, the summary written."""
    clip = make_noise_clip(tmp_path / "noise.mp4", 100) if where == "writing frames" else media["clip"]
    out, summary_file = tmp_path / "out" / "clear.mp4", tmp_path / "s.json"
    result = subprocess.run([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source", str(clip),
                             "--output", str(out), "--side-by-side", "--summary", str(summary_file)],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                            preexec_fn=_file_size_limit(limit))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.splitlines()[-1] == (f"kanet run: error: {out}: cannot {verb} the video (File too large); "
                                              "nothing is left under that name"), result.stderr
    assert "Traceback" not in result.stderr and os.listdir(out.parent) == []
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "error" and "File too large" in summary["error"] and summary["outputs"] == []


def test_two_sources_one_dies_and_comes_back(frame_onnx, media, http_stream, tmp_path, capsys):
    """A list file names a local video and an HTTP stream whose first connection is cut half-way:
    the stream is reopened, frames already delivered are skipped, every frame of both comes out once."""
    url = http_stream(die=1)
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# two sources\n{media['clip']}\n{url}\n")
    out, summary_file = tmp_path / "out.mkv", tmp_path / "s.json"
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(listing), "--output", str(out),
                          "--batch", "2", "--retry-delay", "0.05", "--summary", str(summary_file))
    assert code == 0, err
    summary = json.loads(summary_file.read_text())
    clip, stream = summary["sources"]
    assert (clip["status"], clip["frames_out"]) == ("ok", 30)
    assert (stream["status"], stream["frames_out"], stream["retries"]) == ("ok", 40, 1)
    assert stream["replayed"] > 0 and "Input/output error" in stream["errors"][0]
    assert summary["frames_in"] == summary["frames_out"] == 70 and summary["streams"]["retried"] == [stream["label"]]
    assert summary["inference"]["mean_batch"] > 1
    assert len(read_frames(tmp_path / "out-clip.mkv")) == 30
    assert len(read_frames(Path(stream["output"]))) == 40


def test_a_dropped_stream_is_reported_and_spares_the_others(frame_onnx, media, http_stream, tmp_path, capsys):
    url = http_stream(die=100)
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", url, "--source", str(media["clip"]),
                          "--output", str(tmp_path / "out"), "--retries", "2", "--retry-delay", "0.05",
                          "--summary", str(tmp_path / "s.json"))
    assert code == 1
    summary = json.loads((tmp_path / "s.json").read_text())
    stream, clip = summary["sources"]
    assert (stream["status"], stream["retries"]) == ("dropped", 2) and 0 < stream["frames_out"] < 40
    assert (clip["status"], clip["frames_out"]) == ("ok", 30)
    assert summary["streams"]["dropped"] == [stream["label"]]
    assert len(list((tmp_path / "out" / "clip").glob("*.png"))) == 30
    assert f"{stream['label']}: dropped" in err


def test_videos_without_a_decodable_frame_say_why(frame_onnx, tmp_path, capsys):
    header_only = tmp_path / "header_only.y4m"  # a valid stream that ends before its first frame
    header_only.write_text(f"YUV4MPEG2 W{W} H{H} F25:1 Ip A1:1 C420jpeg\n")
    clip = make_clip(tmp_path / "clip.mp4", 4, audio=False)
    wiped = bytearray(clip.read_bytes())
    with av.open(str(clip)) as container:
        for packet in [p for p in container.demux(video=0) if p.size]:
            wiped[packet.pos:packet.pos + packet.size] = bytes(packet.size)
    (tmp_path / "wiped.mp4").write_bytes(bytes(wiped))
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(header_only),
                          "--source", str(tmp_path / "wiped.mp4"), "--output", str(tmp_path / "out"))
    assert code == 1  # failed sources
    assert f"header_only: failed, 0 written, 0 undecodable, 0 retries; last error: {header_only}: the file holds no " \
           "video frames" in err
    assert f"wiped: failed, 0 written, 4 undecodable, 0 retries; last error: {tmp_path / 'wiped.mp4'}: none of its " \
           "4 frame(s) could be decoded" in err


def test_corrupt_truncated_and_empty_inputs(frame_onnx, media, tmp_path, capsys):
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(media["corrupt"]),
                          "--source", str(media["empty"]), "--source", str(media["truncated"]),
                          "--output", str(tmp_path / "out"), "--summary", str(tmp_path / "s.json"))
    assert code == 1
    corrupt, empty, truncated = json.loads((tmp_path / "s.json").read_text())["sources"]
    assert (corrupt["status"], corrupt["frames_in"], corrupt["frames_out"], corrupt["undecodable"]) == ("ok", 30, 27, 3)
    assert len(list((tmp_path / "out" / "corrupt").glob("*.png"))) == 27
    for broken in (empty, truncated):
        assert broken["status"] == "failed" and broken["frames_out"] == 0
        assert "cannot open" in broken["errors"][0]
    assert "empty: failed" in err


@pytest.mark.parametrize("args, expect", [
    (["--source", "{empty_dir}"], "no images or videos in this folder"),
    (["--source", "{tmp}/missing.mp4"], "missing.mp4: no such file, folder, camera or URL"),
    (["--source", "{clip}", "--model", "{tmp}/none.onnx"], "none.onnx: no such model file"),
    (["--source", "{clip}", "--output", "{tmp}/one.png"], "an image file holds one dehazed image"),
    (["--source", "{clip}", "--source", "{clip}", "--output", "-"], "raw frames on stdout take exactly one source"),
    (["--source", "{clip}", "--show", "--output", "{tmp}/o"], "--show needs a display"),
    (["--source", "{clip}", "--half"], "is an FP32 model and --half asks for FP16"),
    (["--source", "{clip}", "--max-side", "20"], "max side 20: must be at least 33"),
    (["--source", "{clip}", "--output", "{tmp}/x.gif"], "x.gif: unknown output type '.gif'; outputs are a video "
                                                         "(.mp4, .mkv, .mov, .m4v, .ts, .avi, .webm), an image (.bmp"),
])
def test_bad_input_is_one_clear_line(frame_onnx, media, tmp_path, capsys, monkeypatch, args, expect):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    (tmp_path / "empty").mkdir()
    fill = {"empty_dir": tmp_path / "empty", "tmp": tmp_path, "clip": media["clip"]}
    args = [a.format(**fill) for a in args]
    defaults = ["--model", str(frame_onnx)] + (["--output", str(tmp_path / "o")] if "--output" not in args else [])
    code, err = kanet_run(capsys, *defaults, *args)
    assert code == 2
    assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.gif").exists()  # an unknown extension is no longer made a folder


def test_an_existing_folder_with_a_dot_is_still_a_folder(tmp_path):
    from runtime.sinks import ImageFolder, sinks_for
    from runtime.sources import open_sources

    image, folder = tmp_path / "hazy.png", tmp_path / "out.v2"
    cv2.imwrite(str(image), np.full((40, 40, 3), 90, np.uint8))
    folder.mkdir()
    (sink,) = sinks_for(str(folder), open_sources([str(image)]))
    assert isinstance(sink, ImageFolder) and sink.folder == folder


def test_max_side_dehazes_large_frames_smaller_and_restores_their_size(frame_onnx, tmp_path, capsys):
    rng = np.random.default_rng(3)
    large, small = rng.integers(0, 256, (H, W, 3), dtype=np.uint8), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    folder = tmp_path / "hazy"
    folder.mkdir()
    cv2.imwrite(str(folder / "large.png"), large)
    cv2.imwrite(str(folder / "small.png"), small)
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(folder), "--output",
                          str(tmp_path / "out"), "--max-side", "40")
    assert code == 0, err
    dehaze = Dehazer.load(frame_onnx)
    shrunk = dehaze(cv2.resize(large, (40, 30), interpolation=cv2.INTER_AREA))  # 64 x 48 -> 40 x 30
    expected = cv2.resize(shrunk, (W, H), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "large.png")), expected)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "small.png")), dehaze(small))  # not over 40


def test_half_runs_the_fp16_model_of_an_export_folder(exported, tmp_path, capsys):
    image = tmp_path / "hazy.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), 90, np.uint8))
    code, err = kanet_run(capsys, "--model", str(exported["dir"]), "--device", "cpu", "--half", "--source", str(image),
                          "--output", str(tmp_path / "out"), "--summary", str(tmp_path / "s.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["precision"] == "fp16"


def test_raw_frames_on_stdout_tiled(frame_onnx, media):
    """`--output -` for a pipe: exactly N x H x W x 3 bytes on stdout, every message on stderr."""
    result = subprocess.run([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source",
                             str(media["clip"]), "--output", "-", "--max-frames", "4", "--tile", "40",
                             "--tile-overlap", "8"], capture_output=True, cwd=REPO, env={**os.environ})
    assert result.returncode == 0, result.stderr.decode()
    frames = np.frombuffer(result.stdout, np.uint8).reshape(4, H, W, 3)
    assert b"raw bgr24 frames of 64x48" in result.stderr and b"4 of 4 frames written" in result.stderr
    decoded = read_frames(media["clip"])[:4]
    tiled = Dehazer.load(frame_onnx, tile=40, tile_overlap=8)(np.stack(decoded))
    np.testing.assert_array_equal(frames, tiled)


def _interrupt(command: list[str], partial: Path, times: int) -> tuple[int, str]:
    """Run `command`, send SIGINT once `partial` (the video being written) has frames, wait for the pipeline
    to acknowledge it, then send the remaining `times - 1` at once; the exit status and stderr."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (partial.is_file() and partial.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "stopping: finishing the frames in flight" in line:
            break
    for _ in range(times - 1):
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, "".join(seen) + err


def test_ctrl_c_finishes_the_frames_in_flight(frame_onnx, tmp_path):
    """SIGINT mid-run: reading stops, frames already read are still written, the video is closed
    properly (with its audio cut to the video), the summary is written, the exit status is 130."""
    clip = make_clip(tmp_path / "long.mp4", 300)
    out, summary_file = tmp_path / "out.mp4", tmp_path / "s.json"
    code, err = _interrupt([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source", str(clip),
                            "--output", str(out), "--summary", str(summary_file)], tmp_path / "out.partial.mp4", 1)
    assert code == 130, err
    summary = json.loads(summary_file.read_text())
    assert summary["interrupted"] and summary["status"] == "interrupted" and summary["error"] is None
    assert summary["sources"][0]["audio"] == "copied"
    assert summary["sources"][0]["status"] == "stopped" and summary["outputs"] == [str(out)]
    assert 0 < summary["frames_out"] == summary["frames_in"] < 300 and summary["dropped_frames"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.mp4", "s.json"]  # no partial left
    assert len(read_frames(out)) == summary["frames_out"]
    with av.open(str(out)) as container:
        video_seconds = float(container.streams.video[0].duration * container.streams.video[0].time_base)
        audio = container.streams.audio[0]
        audio_seconds = sum(float(p.duration * p.time_base) for p in container.demux(audio) if p.duration)
    assert audio_seconds < video_seconds + 0.2


def test_a_second_ctrl_c_aborts_and_leaves_a_named_partial(frame_onnx, tmp_path):
    """The second SIGINT aborts mid-flight: exit 130, the summary says so and lists the output kept, which is
    a closed, readable NAME.partial.mp4; nothing ever appears under the final name."""
    clip = make_clip(tmp_path / "long.mp4", 300)
    out, partial, summary_file = tmp_path / "out.mp4", tmp_path / "out.partial.mp4", tmp_path / "s.json"
    code, err = _interrupt([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source", str(clip),
                            "--output", str(out), "--summary", str(summary_file), "--batch", "8"], partial, 2)
    assert code == 130 and err.splitlines()[-1] == "kanet run: interrupted", err
    assert "Traceback" not in err
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "interrupted" and summary["outputs"] == [str(partial)]
    assert summary["sources"][0]["output"] == str(partial) and summary["dropped_frames"] > 0
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.partial.mp4", "s.json"]
    assert 0 < len(read_frames(partial)) <= summary["frames_out"]


def test_the_summary_is_written_when_the_run_fails(frame_onnx, media, tmp_path, capsys):
    """A failed source (exit 1) and bad input found before any frame flowed (exit 2) both leave a summary
    saying how the run ended."""
    summary_file = tmp_path / "s.json"
    code, err = kanet_run(capsys, "--model", str(frame_onnx), "--source", str(media["empty"]),
                          "--output", str(tmp_path / "out"), "--summary", str(summary_file))
    summary = json.loads(summary_file.read_text())
    assert code == 1 and summary["status"] == "failed"
    assert (summary["streams"]["failed"], summary["outputs"]) == (["empty"], [])
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_bytes(b"not an onnx file")
    code, err = kanet_run(capsys, "--model", str(not_a_model), "--source", str(media["clip"]),
                          "--output", str(tmp_path / "out.mp4"), "--summary", str(summary_file))
    summary = json.loads(summary_file.read_text())
    assert code == 2 and summary["status"] == "error" and summary["error"] in err.splitlines()[-1]
    assert (summary["frames_out"], summary["outputs"]) == (0, [])


def _digest(paths: list[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


@pytest.mark.parametrize("case", ["same video", "same folder", "symlink to the video", "hard link to the video",
                                  "image onto itself"])
def test_an_input_is_never_overwritten(frame_onnx, media, tmp_path, capsys, case):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(media["clip"].read_bytes())
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(photos / name), np.full((40, 40, 3), 90, np.uint8))
    source, output = {
        "same video": (clip, clip),
        "same folder": (photos, photos),
        "symlink to the video": (clip, tmp_path / "link.mp4"),
        "hard link to the video": (clip, tmp_path / "hard.mp4"),
        "image onto itself": (photos / "a.png", photos / "a.png"),
    }[case]
    if case.startswith("symlink"):
        output.symlink_to(clip)
    if case.startswith("hard"):
        os.link(clip, output)
    before = _digest([clip, *photos.iterdir()])
    for extra in ([], ["--overwrite"]):  # --overwrite never replaces a source
        assert main(["run", "--model", str(frame_onnx), "--source", str(source), "--output", str(output),
                     *extra]) == 2
        assert "source" in capsys.readouterr().err
    assert _digest([clip, *photos.iterdir()]) == before
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.jpg"]


def test_an_existing_output_needs_overwrite(frame_onnx, media, tmp_path, capsys):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"keep me")
    args = ["run", "--model", str(frame_onnx), "--source", str(media["clip"]), "--output", str(target),
            "--max-frames", "2"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and target.read_bytes() == b"keep me"
    assert main([*args, "--overwrite"]) == 0
    with av.open(str(target)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2


def test_without_output_each_run_gets_a_new_folder(frame_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "hazy.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), 90, np.uint8))
    for folder in ("exp", "exp2"):
        assert main(["run", "--model", str(frame_onnx), "--source", str(image)]) == 0
        assert f"runs/dehaze/{folder}" in capsys.readouterr().err
        assert (tmp_path / "runs/dehaze" / folder / "hazy.png").is_file()


def test_progress_is_whole_lines_when_stderr_is_captured(frame_onnx, media, tmp_path):
    clip = make_clip(tmp_path / "twenty.mp4", 20, audio=False)
    result = subprocess.run([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source", str(clip),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    assert re.search(r"^dehazing: 20/20 frames, [\d.]+ fps$", result.stderr, re.M), result.stderr


def _closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`kanet run` as a user starts it, so the output checked is what is printed (OpenCV writes to fd 2)."""
    return subprocess.run([sys.executable, "-m", "kanet", "run", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_a_source_that_never_opens_fails_after_one_quick_retry_in_one_line(frame_onnx, tmp_path):
    """A refused RTSP and HTTP URL and a missing camera: no back-off through --retries, one line each
    naming the source, no OpenCV warnings, exit 1."""
    port = _closed_port()
    urls = [f"rtsp://127.0.0.1:{port}/live", f"http://127.0.0.1:{port}/live.ts"]
    result = _run_subprocess("--model", str(frame_onnx), *(f"--source={s}" for s in [*urls, "97"]),
                             "--output", str(tmp_path / "out"), "--retries", "5", "--retry-delay", "10",
                             "--summary", str(tmp_path / "s.json"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    for name in [*urls, "camera 97"]:
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"kanet run: {name}: ")]
        assert len(lines) == 1 and lines[0].endswith("never opened: gave up after one quick retry"), result.stderr
    assert "Connection refused" in result.stderr and "no such camera" in result.stderr
    assert "WARN" not in result.stderr and "retry 1/5" not in result.stderr, result.stderr
    sources = json.loads((tmp_path / "s.json").read_text())["sources"]
    assert [(s["status"], s["retries"]) for s in sources] == [("failed", 1)] * 3


def test_reconnects_of_a_stream_that_was_open_are_printed(frame_onnx, http_stream, tmp_path):
    url = http_stream(die=100)  # every connection breaks off half-way
    result = _run_subprocess("--model", str(frame_onnx), "--source", url, "--output", str(tmp_path / "out"),
                             "--retries", "2", "--retry-delay", "0.05", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    printed = [line for line in result.stderr.splitlines() if line.startswith(f"kanet run: {url}: ")]
    assert [line.split(" (")[0] for line in printed] == [
        f"kanet run: {url}: retry 1/2 in 0.05 s", f"kanet run: {url}: retry 2/2 in 0.1 s",
        f"kanet run: {url}: dropped after 2 retries"], result.stderr
