"""`kanet demo` on the project's shipped checkpoint: every artifact, parity, a dehazed clip, a rerun."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import REPO, SAMPLES
from kanet.demo import DEFAULT_CHECKPOINT


def _kanet(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanet", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_demo_end_to_end_then_reuses_its_artifacts(tmp_path):
    assert DEFAULT_CHECKPOINT.is_file(), f"the project's checkpoint {DEFAULT_CHECKPOINT} is missing"
    out, elsewhere = tmp_path / "demo", tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ("demo", "--out", str(out), "--max-side", "160", "--clip-frames", "6")
    first = _kanet(*args, cwd=elsewhere)  # outside the checkout: samples, checkpoint and cache still found
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert list(elsewhere.iterdir()) == []
    # captured stderr gets whole progress lines; the check counter closes with parity, before the clip's frames
    lines = first.stderr.splitlines()
    counted = [i for i, line in enumerate(lines) if " checks" in line]
    assert counted and all(lines[i].startswith(("export + engine:", "parity:")) for i in counted), lines
    assert lines[counted[-1]].startswith("parity:") and "/" in lines[counted[-1]], lines
    assert counted[-1] < min(i for i, line in enumerate(lines) if line.startswith("dehazing:")), lines

    for name in ("summary.md", "contact_sheet.png", "parity.json", "quality.json", "clip_hazy.mp4",
                 "clip_dehazed.mp4", "export/kanet_fp16.plan", "export/kanet_fp16.json"):
        assert (out / name).is_file(), name
    photos = sorted(p.stem for p in SAMPLES.glob("*.png"))
    assert sorted(p.stem for p in (out / "side_by_side").glob("*.png")) == photos
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"]

    clip = json.loads((out / "clip_run.json").read_text())
    # the back-end the demo's images and clip come from is one parity checked (OpenVINO under auto on a CPU)
    assert clip["backend"] in {r["backend"] for r in parity["results"]}, (clip["backend"], parity["results"])
    assert clip["frames_in"] == clip["frames_out"] == 6
    video = cv2.VideoCapture(str(out / "clip_dehazed.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * 320

    # the shipped checkpoint is trained: it must lower the haze estimate of real hazy photographs
    means = json.loads((out / "quality.json").read_text())["means"]
    assert means["KA-Net"]["haze_density"] < means["hazy input"]["haze_density"]

    again = _kanet(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "reused (same checkpoint)" in summary and "| export + engine |" not in summary


def test_demo_bad_input_is_a_clear_error(tmp_path):
    result = _kanet("demo", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.pt"))
    assert result.returncode == 2 and "none.pt: no such checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
