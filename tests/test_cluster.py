"""`kanet run --cluster` on a real local Ray cluster (2 CPUs, ONNX Runtime, no mocks): sources spread over two
workers with outputs identical to a single-process run, a bad source that fails alone, a worker killed
mid-run whose work is redone, a long video split into segments and joined back without a frame lost."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import REPO
from kanet.cli import main
from test_run_command import make_clip

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """One real local Ray cluster for the module; `kanet run --cluster auto` in this process runs on it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cluster_media")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    for name in ("a", "b", "c"):
        cv2.imwrite(str(photos / f"{name}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (root / "bad.mp4").write_bytes(b"not a video")
    return {"one": make_clip(root / "one.mp4", 12), "two": make_clip(root / "two.mp4", 9, audio=False),
            "photos": photos, "bad": root / "bad.mp4"}


def test_auto_without_a_running_cluster_is_one_line(frame_onnx, media, tmp_path):
    """First in the module: once the module's cluster runs, `auto` finds it."""
    result = subprocess.run([sys.executable, "-m", "kanet", "run", "--model", str(frame_onnx), "--source",
                             str(media["one"]), "--output", str(tmp_path / "out"), "--cluster", "auto"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "kanet run: error: --cluster auto: cannot reach a Ray cluster (Could not find any running Ray instance"), \
        result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_run_without_cluster_never_imports_ray(frame_onnx, media, tmp_path):
    code = ("import sys\nfrom kanet.cli import main\n"
            f"rc = main(['run', '--model', {str(frame_onnx)!r}, '--source', {str(media['photos'])!r}, "
            f"'--output', {str(tmp_path / 'out')!r}])\n"
            "assert 'ray' not in sys.modules and 'runtime.cluster' not in sys.modules, 'Ray was imported'\n"
            "sys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): cv2.imread(str(p)).tobytes() for p in sorted(folder.rglob("*.png"))}


def test_sources_spread_over_two_workers_match_a_single_process_run(cluster, frame_onnx, media, tmp_path, capsys):
    """Two videos, a folder of images and a file that is no video, on 2 workers: every good source is written
    under the names a run without --cluster gives, frame for frame identical; the bad one fails alone (exit 1)."""
    sources = [a for key in ("one", "photos", "two", "bad") for a in ("--source", str(media[key]))]
    single = main(["run", "--model", str(frame_onnx), *sources, "--output", str(tmp_path / "single")])
    code = main(["run", "--model", str(frame_onnx), *sources, "--output", str(tmp_path / "cluster"),
                 "--cluster", "auto", "--workers", "2", "--summary", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert single == code == 1, err
    expected = _pngs(tmp_path / "single")
    assert len(expected) == 12 + 3 + 9 and _pngs(tmp_path / "cluster") == expected
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["status"], summary["frames_in"], summary["frames_out"]) == ("failed", 24, 24)
    assert summary["cluster"] == "auto" and summary["fps"] > 0
    by_label = {s["label"]: s for s in summary["sources"]}
    assert [by_label[k]["status"] for k in ("one", "photos", "two", "bad")] == ["ok", "ok", "ok", "failed"]
    assert "cannot open" in by_label["bad"]["errors"][0] and "bad: failed" in err
    worker_line = r"^  worker-1 on [\d.]+ \(1 CPU\): \d+ frames in \d part\(s\), [\d.]+ fps; started in "
    assert re.search(worker_line, err, re.M), err
    workers = {w["worker"]: w for w in summary["workers"]}
    assert sorted(workers) == ["worker-1", "worker-2"]
    assert all(w["parts"] >= 1 and w["load_seconds"] > 0 and w["resources"] == "1 CPU" for w in workers.values())
    for label, frames in (("one", 12), ("photos", 3), ("two", 9)):
        (part,) = by_label[label]["parts"]
        assert part["worker"] in workers and part["frames_out"] == frames and part["reruns"] == 0
    assert sum(w["frames_out"] for w in workers.values()) == 24


def test_openvino_workers_get_the_options_given_with_their_share_of_threads(cluster, frame_onnx, media, tmp_path,
                                                                            capsys):
    pytest.importorskip("openvino")
    cache = tmp_path / "ov_cache"
    code = main(["run", "--model", str(frame_onnx), "--source", str(media["photos"]), "--output", str(tmp_path / "out"),
                 "--backend", "openvino", "--ov-cache", str(cache), "--cluster", "auto", "--workers", "2",
                 "--summary", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["backend"].startswith("openvino ") and summary["frames_out"] == 3
    assert any(cache.iterdir())  # the workers compiled into the cache they were given


def test_video_outputs_keep_their_names_and_audio(cluster, frame_onnx, media, tmp_path, capsys):
    out = tmp_path / "clear.mkv"
    code = main(["run", "--model", str(frame_onnx), "--source", str(media["one"]), "--source", str(media["two"]),
                 "--output", str(out), "--cluster", "auto", "--summary", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clear-one.mkv", "clear-two.mkv", "s.json"]
    one, two = json.loads((tmp_path / "s.json").read_text())["sources"]
    assert (one["audio"], one["frames_out"], two["audio"], two["frames_out"]) == ("copied", 12, None, 9)


@pytest.mark.parametrize("args, expect", [
    (["--workers", "2"], "--workers 2 needs --cluster"),
    (["--cluster", "auto", "--output", "-"], "--output - (raw frames on stdout) needs the frames on this machine"),
    (["--cluster", "auto", "--device", "1"], "--device 1 picks a GPU of this machine; with --cluster each worker"),
    (["--output", "{tmp}/out.avi", "--lossless"], "out.avi: --lossless: .avi is written with mpeg4, which has no "
                                                   "lossless mode; give .mp4, .mkv, .mov, .m4v, .ts, .webm"),
    (["--output", "{tmp}/png", "--lossless"], "--lossless applies to video outputs"),
])
def test_flags_a_cluster_run_cannot_take_are_one_line(frame_onnx, media, tmp_path, capsys, args, expect):
    args = [a.format(tmp=tmp_path) for a in args]
    code = main(["run", "--model", str(frame_onnx), "--source", str(media["one"]), *args])
    err = capsys.readouterr().err
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err


def test_a_model_the_workers_cannot_load_is_one_line(cluster, media, tmp_path, capsys):
    code = main(["run", "--model", str(tmp_path / "none.onnx"), "--source", str(media["one"]), "--output",
                 str(tmp_path / "out"), "--cluster", "auto", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"kanet run: error: {tmp_path / 'none.onnx'}: no such model file or folder", err
    assert not (tmp_path / "out").exists()


def test_a_cluster_address_that_is_not_one_is_a_parse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--model", "m.onnx", "--source", "x.mp4", "--cluster", "10.0.0.1"])
    assert exit_.value.code == 2
    assert "argument --cluster: expected local, auto or ray://HOST:PORT, got '10.0.0.1'" in capsys.readouterr().err


def test_workers_are_planned_per_gpu_per_cores_or_as_asked():
    from runtime.cluster_plan import Node, plan_workers

    cpu8, cpu2, gpu2 = Node("a", "10.0.0.1", 8, 0), Node("b", "10.0.0.2", 2, 0), Node("g", "10.0.0.3", 16, 2)
    assert [(s.node.id, s.cpus, s.gpus) for s in plan_workers([cpu8, gpu2])] == [("g", 1, 1), ("g", 1, 1)]
    assert [(s.node.id, s.cpus, s.threads) for s in plan_workers([cpu8, cpu2])] == [
        ("a", 4, 4), ("a", 4, 4), ("b", 2, 2)]
    assert [(s.node.id, s.cpus) for s in plan_workers([cpu8, cpu2], workers=5)] == [("a", 2), ("a", 2), ("a", 2),
                                                                                    ("a", 2), ("b", 2)]
    assert [(s.cpus, s.threads) for s in plan_workers([cpu2], workers=3)] == [(0.6666, 1)] * 3
    assert [s.gpus for s in plan_workers([gpu2], workers=4)] == [0.5] * 4
    assert [s.describe() for s in plan_workers([cpu8, gpu2], use_gpus=False, workers=2)] == ["8 CPU", "16 CPU"]


def _kill_when_busy(worker: str, after_frames: int) -> threading.Thread:
    """A thread that finds the run's `worker` (actors are named kanet-RUN-worker-N) and kills it once it has
    written `after_frames` frames of its work (real death: the process ends, its work in flight is lost)."""
    def kill() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].endswith(f"-{worker}")]
            if names:
                actor = ray.get_actor(names[0])
                try:
                    if ray.get(actor.progress.remote()) >= after_frames:
                        ray.kill(actor)
                        return
                except ray.exceptions.RayError:
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_mid_run_has_its_work_redone_elsewhere(cluster, frame_onnx, tmp_path, capsys, caplog):
    """worker-1 is killed while it dehazes its clip: the clip is started again on worker-2, and both outputs
    are the single-process run's, every frame once (nothing lost, nothing left over from the dead worker)."""
    clips = [make_clip(tmp_path / f"{name}.mp4", 60, audio=False) for name in ("first", "second")]
    sources = [a for clip in clips for a in ("--source", str(clip))]
    assert main(["run", "--model", str(frame_onnx), *sources, "--output", str(tmp_path / "single")]) == 0
    killer = _kill_when_busy("worker-1", after_frames=5)
    code = main(["run", "--model", str(frame_onnx), *sources, "--output", str(tmp_path / "cluster"),
                 "--cluster", "auto", "--workers", "2", "--summary", str(tmp_path / "s.json")])
    killer.join(timeout=10)
    err = capsys.readouterr().err
    assert code == 0, err
    expected = _pngs(tmp_path / "single")
    assert len(expected) == 120 and _pngs(tmp_path / "cluster") == expected
    summary = json.loads((tmp_path / "s.json").read_text())
    workers = {w["worker"]: w for w in summary["workers"]}
    assert workers["worker-1"]["died"] and not workers["worker-2"]["died"]
    redone = [s for s in summary["sources"] if s["parts"][0]["reruns"]]
    assert len(redone) == 1 and redone[0]["parts"][0]["worker"] == "worker-2"
    assert redone[0]["errors"][0].startswith("worker-1 on ") and " died (" in redone[0]["errors"][0]
    assert (summary["frames_in"], summary["frames_out"], summary["status"]) == (120, 120, "ok")
    assert any("started again on another worker (1/2)" in r.getMessage() for r in caplog.records)


def _decoded(path: Path) -> tuple[list[int], list[np.ndarray], list[tuple[int, bytes]]]:
    """Video frames' pts and pixels, audio packets' pts and bytes."""
    with av.open(str(path)) as container:
        frames = [(f.pts, f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = [(p.pts, bytes(p)) for p in container.demux(audio=0) if p.size]
    return [t for t, _ in frames], [f for _, f in frames], audio


def test_a_file_is_cut_at_keyframes_into_even_spans(tmp_path):
    from runtime.segments import PacketIndex, segment_count

    index = PacketIndex.read(str(make_clip(tmp_path / "long.mp4", 80, gop=10)))
    assert len(index.times) == 80 and len(index.keys) == 7
    spans = index.spans(segment_count(80, 80, workers=2))
    assert [(s.first, s.frames, s.start_s, s.end_s) for s in spans] == [(0, 30, 0.0, 3.0), (30, 20, 3.0, 5.0),
                                                                        (50, 30, 5.0, None)]
    assert all(s.start in index.keys for s in spans[1:]) and spans[0].start is None
    assert segment_count(24, 24, workers=8) == 1  # too short to share


def test_a_long_video_in_segments_joins_to_the_single_process_output(cluster, frame_onnx, tmp_path, capsys):
    """An 80-frame clip (a keyframe every 10) on 2 workers is cut into 3 segments; the joined lossless video
    decodes to the single-process run's frames at the same times, with the same audio packets, and a PNG
    folder holds the same 80 images under the same names."""
    clip = make_clip(tmp_path / "long.mp4", 80, gop=10)
    run = ["run", "--model", str(frame_onnx), "--source", str(clip)]
    assert main([*run, "--output", str(tmp_path / "single" / "long.mkv"), "--lossless"]) == 0
    assert main([*run, "--output", str(tmp_path / "single" / "png")]) == 0
    code = main([*run, "--output", str(tmp_path / "cluster" / "long.mkv"), "--lossless", "--cluster", "auto",
                 "--workers", "2", "--summary", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    times, frames, audio = _decoded(tmp_path / "single" / "long.mkv")
    joined_times, joined, joined_audio = _decoded(tmp_path / "cluster" / "long.mkv")
    assert len(frames) == 80 and joined_times == times and joined_audio == audio and len(audio) > 100
    assert all(np.array_equal(a, b) for a, b in zip(joined, frames))
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir()) == ["long.mkv"]  # the parts are gone
    (source,) = json.loads((tmp_path / "s.json").read_text())["sources"]
    assert (source["status"], source["frames_in"], source["frames_out"], source["audio"]) == ("ok", 80, 80, "copied")
    parts = source["parts"]
    assert [p["segment"] for p in parts] == [0, 1, 2] and [p["frames_out"] for p in parts] == [30, 20, 30]
    assert [p["start"] for p in parts[1:]] == [p["end"] for p in parts[:-1]] and parts[-1]["end"] is None
    assert {p["worker"] for p in parts} == {"worker-1", "worker-2"}

    assert main([*run, "--output", str(tmp_path / "cluster" / "png"), "--cluster", "auto", "--workers", "2"]) == 0
    expected = _pngs(tmp_path / "single" / "png")
    assert len(expected) == 80 and _pngs(tmp_path / "cluster" / "png") == expected


def test_a_lossy_split_video_keeps_every_frame_time_and_audio_packet(cluster, frame_onnx, tmp_path, capsys):
    """The default H.264 (B-frames; Matroska stores no decode times) joined from segments: the same frames at the
    same times with the same audio as a single-process run; the pixels only as close as two encodes are."""
    clip = make_clip(tmp_path / "long.mp4", 80, gop=10)
    run = ["run", "--model", str(frame_onnx), "--source", str(clip)]
    assert main([*run, "--output", str(tmp_path / "single.mkv")]) == 0
    capsys.readouterr()
    assert main([*run, "--output", str(tmp_path / "cluster.mkv"), "--cluster", "auto", "--workers", "2"]) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dehazing: ")]
    # one display for all the workers' segments, counting the whole file
    assert all("/80 frames" in line for line in progress) and progress[-1].startswith("dehazing: 80/80 frames, ")
    times, frames, audio = _decoded(tmp_path / "single.mkv")
    joined_times, joined, joined_audio = _decoded(tmp_path / "cluster.mkv")
    assert len(joined) == 80 and joined_times == times and joined_audio == audio
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(joined, frames)]) < 8


def test_a_segment_whose_worker_is_killed_is_redone_and_the_join_is_whole(cluster, frame_onnx, tmp_path, caplog):
    """worker-1 dies inside its segment of a split file: the segment is done again by worker-2 and the joined
    lossless video still decodes to the single-process run's 80 frames, at the same times."""
    clip = make_clip(tmp_path / "long.mp4", 80, gop=10)
    run = ["run", "--model", str(frame_onnx), "--source", str(clip), "--lossless"]
    assert main([*run, "--output", str(tmp_path / "single.mkv")]) == 0
    killer = _kill_when_busy("worker-1", after_frames=3)
    code = main([*run, "--output", str(tmp_path / "cluster.mkv"), "--cluster", "auto", "--workers", "2",
                 "--summary", str(tmp_path / "s.json")])
    killer.join(timeout=10)
    assert code == 0
    times, frames, _ = _decoded(tmp_path / "single.mkv")
    joined_times, joined, _ = _decoded(tmp_path / "cluster.mkv")
    assert joined_times == times and all(np.array_equal(a, b) for a, b in zip(joined, frames))
    (source,) = json.loads((tmp_path / "s.json").read_text())["sources"]
    redone = [p for p in source["parts"] if p["reruns"]]
    assert len(redone) == 1 and redone[0]["worker"] == "worker-2" and source["frames_out"] == 80
    assert any("started again on another worker (1/2)" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.mkv", "long.mp4", "s.json", "single.mkv"]
