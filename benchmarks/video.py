"""End-to-end video: `kanet run` on a generated H.264 clip (decode + inference + encode)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

from runtime.imagefile import read_image
from runtime.summary import RunSummary

CODE = Path(__file__).resolve().parents[1]  # the folder holding the benchmarks and kanet packages


def write_clip(path: Path, height: int, width: int, frames: int, source: Path, fps: int = 30) -> Path:
    """An H.264 clip panning across a real hazy photograph (source), so the decoder sees real content."""
    if height % 2 or width % 2:
        raise ValueError(f"H.264 (yuv420p) needs an even frame size, got {height}x{width}")
    photo = read_image(source, cv2.IMREAD_COLOR)
    if photo is None:
        raise FileNotFoundError(f"{source}: photograph missing or unreadable")
    pan = width // 4
    scale = max(height / photo.shape[0], (width + pan) / photo.shape[1])
    photo = cv2.resize(photo, (max(width + pan, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            x = round(pan * i / max(frames - 1, 1))
            crop = np.ascontiguousarray(photo[:height, x:x + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="bgr24")))
        container.mux(stream.encode())
    return path


def end_to_end(model: Path, height: int, width: int, frames: int, workdir: Path, photo: Path,
               timeout_s: float = 3600, device: str = "auto") -> dict:
    """Run `kanet run` in a subprocess on a generated clip; its summary plus the process wall time.
    The subprocess runs in workdir with absolute paths, importing this code (CODE first on its path)."""
    model, workdir = Path(model).resolve(), Path(workdir).resolve()
    clip = write_clip(workdir / f"clip_{height}x{width}.mp4", height, width, frames, photo)
    output, summary = workdir / f"dehazed_{height}x{width}.mp4", workdir / f"run_{height}x{width}.json"
    command = [sys.executable, "-m", "kanet", "run", "--model", str(model), "--source", str(clip),
               "--output", str(output), "--summary", str(summary), "--device", device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CODE), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=workdir, env=env)
    wall = time.perf_counter() - start
    result = {"model": str(model), "clip": {"height": height, "width": width, "frames": frames, "codec": "h264"},
              "command": "kanet " + " ".join(command[3:]), "process_wall_s": round(wall, 2)}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {**result, "error": f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"}
    result["summary"] = json.loads(summary.read_text())
    result["fps"] = RunSummary.from_json(result["summary"]).fps
    return result
