"""`python -m benchmarks.cost_table`: rewrite runtime/frame_cost.json, the measured points behind the oversize
frame warning of `kanet run`, from the `kanet bench` runs committed in benchmarks/results. Run it after
committing a run; tests/test_frame_cost.py fails while the two disagree."""
from __future__ import annotations

import json
from pathlib import Path

from runtime.frame_cost import TABLE, Point

RESULTS = Path(__file__).resolve().parent / "results"
# the kinds of back-end runtime.frame_cost.backend_kind tells apart
KINDS = (("onnxruntime", "cpu"), ("onnxruntime", "gpu"), ("openvino", "cpu"), ("tensorrt", "gpu"))


def measured(family: str, device: str, results: Path) -> tuple[list[Point], str] | None:
    """The batch-1 points of the `kanet bench` run of this back-end kind under results that measured the largest
    frames (the latest of those), largest first, and where it ran."""
    runs = []
    for path in sorted(results.glob("*/results.json")):
        try:
            doc = json.loads(path.read_text())
            on_gpu = bool(doc["system"].get("gpu"))
            rows = [r for r in doc["results"] if r["backend"] == family and r["batch"] == 1 and "latency_ms" in r]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a results file of this format: not evidence
        memory = "device_peak_mib" if device == "gpu" else "host_rss_mib"
        points = [Point(r["height"], r["width"], r["latency_ms"]["p50"] / 1e3, r["memory"].get(memory, 0.0))
                  for r in rows if r.get("memory")]
        if points and on_gpu == (device == "gpu"):
            where = doc["system"]["gpu"]["name"] if on_gpu else doc["system"]["cpu"]["model"]
            runs.append((doc["system"].get("started_at", ""), sorted(points, key=lambda p: -p.mpix),
                         f"on {where}: {path.parent.name}"))
    if not runs:
        return None
    _, points, where = max(runs, key=lambda run: (run[1][0].mpix, run[0]))  # the largest size, then the latest
    return points, where


def table_from(results: Path = RESULTS) -> dict:
    """frame_cost.json's content: per kind measured, where and its two largest points (all the estimate uses)."""
    table = {}
    for family, device in KINDS:
        found = measured(family, device, results)
        if found:
            points, where = found
            table[f"{family}/{device}"] = {"where": where,
                                           "points": [[p.height, p.width, p.seconds, p.mib] for p in points[:2]]}
    return table


if __name__ == "__main__":
    TABLE.write_text(json.dumps(table_from(), indent=1) + "\n")
    print(f"wrote {TABLE}")
