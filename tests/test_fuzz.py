"""A bounded fuzz test: truncated and bit-flipped images, videos, checkpoints, ONNX models and engine manifests
through `kanet run`, `export`, `eval` and `parity` end in an exit status and at most one error line, never
a signal (segfault) or a traceback."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from test_run_command import make_clip


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flipped(data: bytes) -> bytes:
    """Eight seeded bit flips in the first 4 KiB (headers, chunk tables, the graph's structure) and eight
    anywhere: the damage a bad disk or a cut download does."""
    rng = np.random.default_rng(12)
    damaged = bytearray(data)
    for position in [*rng.integers(0, min(4096, len(data)), 8), *rng.integers(0, len(data), 8)]:
        damaged[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(damaged)


@pytest.fixture(scope="module")
def originals(exported, checkpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("originals")
    photo = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "photo.png"), photo)
    cv2.imwrite(str(root / "photo.jpg"), photo)
    return {"png": root / "photo.png", "jpg": root / "photo.jpg", "mp4": make_clip(root / "clip.mp4", 12),
            "avi": make_clip(root / "clip.avi", 12, audio=False), "checkpoint": checkpoint,
            "onnx": exported["dir"] / "kanet_fp32.onnx", "manifest": exported["dir"] / "kanet_fp16.json"}


# (what is damaged, the command it goes through, exit statuses it may end with): a damaged picture or video
# may still decode (exit 0) or lose frames or the whole source (1); a damaged model or manifest is bad input (2).
CASES = [(kind, command, codes) for kind, command, codes in [
    ("png", "run", (0, 1)), ("jpg", "run", (0, 1)), ("mp4", "run", (0, 1)), ("avi", "run", (0, 1)),
    ("onnx", "run", (2,)), ("manifest", "run", (2,)), ("checkpoint", "export", (2,)),
    ("onnx", "eval", (2,)), ("onnx", "parity", (2,)), ("checkpoint", "parity", (2,)),
]]


@pytest.mark.parametrize("damage", [truncated, flipped], ids=["truncated", "flipped"])
@pytest.mark.parametrize("kind, command, codes", CASES, ids=[f"{k}-{c}" for k, c, _ in CASES])
def test_damaged_files_end_cleanly(originals, exported, tmp_path, damage, kind, command, codes):
    original = originals[kind]
    bad = tmp_path / original.name
    bad.write_bytes(damage(original.read_bytes()))
    out = tmp_path / "out"
    onnx = originals["onnx"]
    if kind == "manifest":  # the engine beside its damaged manifest
        shutil.copy(exported["dir"] / "kanet_fp16.plan", tmp_path / "kanet_fp16.plan")
    hazy = tmp_path / "hazy"
    hazy.mkdir()
    cv2.imwrite(str(hazy / "a.png"), np.full((40, 40, 3), 120, np.uint8))
    argv = {
        "run": ["run", "--model", str(tmp_path / "kanet_fp16.plan" if kind == "manifest" else bad if kind == "onnx"
                                      else onnx), "--source", str(hazy / "a.png" if kind in ("onnx", "manifest")
                                                                  else bad), "--output", str(out)],
        "export": ["export", str(bad), "--out", str(out), "--no-engine"],
        "eval": ["eval", "--hazy", str(hazy), "--model", str(bad), "--out", str(out)],
        "parity": ["parity", str(bad if kind == "checkpoint" else originals["checkpoint"]), "--onnx",
                   str(onnx if kind == "checkpoint" else bad), "--photos", str(hazy), "--report",
                   str(out / "parity.json")],
    }[command]
    proc = subprocess.run([sys.executable, "-m", "kanet", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode in codes, (proc.returncode, proc.stderr[-2000:])  # a signal is a negative status
    assert "Traceback" not in proc.stderr + proc.stdout and "internal error" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"kanet {command}: error: ")]
    assert len(errors) == (proc.returncode == 2), proc.stderr
