"""Results as JSON, a Markdown table and a PNG plot; `--compare` ratios between two results files."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from .names import RESULTS_FORMAT, TORCH_EAGER  # noqa: E402


def write_json(doc: dict, path: Path) -> Path:
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_results(path: Path) -> dict:
    """A results document written by `kanet bench`; ValueError when the file is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a `kanet bench` results file (no \"format\": \"{RESULTS_FORMAT}\")")
    return doc


def _shape(row: dict) -> str:
    return f"{row['batch']}x{row['height']}x{row['width']}"


def _memory(row: dict) -> str:
    mem = row.get("memory", {})
    if "device_peak_mib" in mem:
        return f"{mem['device_peak_mib']:.0f} MiB device"
    if "host_rss_mib" in mem:
        return f"RSS {mem['host_rss_mib']:.0f} MiB (+{mem['host_rss_delta_mib']:.0f})"
    return mem.get("error", "-")


def _eager_p50(results: list[dict]) -> dict[str, float]:
    return {_shape(r): r["latency_ms"]["p50"] for r in results if r["backend"] == TORCH_EAGER and "latency_ms" in r}


def markdown(doc: dict) -> str:
    sysinfo, lib = doc["system"], doc["system"]["libraries"]
    git = sysinfo["git"]
    commit = f"{git['commit'][:10]}{' (uncommitted changes)' if git['dirty'] else ''}" if git["commit"] else "unknown"
    trt = lib.get("tensorrt") or (f"TensorRT-RTX {lib['tensorrt_rtx']}" if lib.get("tensorrt_rtx") else "none")
    cpu = sysinfo["cpu"]
    lines = [
        f"# KA-Net benchmark: {sysinfo['device']}",
        "",
        f"{sysinfo['started_at']} · commit {commit} · torch {lib['torch']} · onnxruntime {lib['onnxruntime']} · "
        f"TensorRT {trt} · CPU {cpu['model']}, {cpu['usable_cores']} usable cores, load {cpu['load_average_1m']}"
        + (f" · GPU {sysinfo['gpu']['name']}, driver {sysinfo['gpu'].get('driver', '?')}" if sysinfo["gpu"] else ""),
        "",
        f"Weights: {doc['model']['weights']}.",
        "",
        f"Timing: {doc['timing']}.",
        "",
        "## Latency and throughput",
        "",
        "| shape NxHxW | backend | precision | p50 ms | p90 ms | p99 ms | frames/s | vs eager | TFLOP/s | memory | setup s | n |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    eager = _eager_p50(doc["results"])
    for row in doc["results"]:
        if "error" in row:
            lines.append(f"| {_shape(row)} | {row['backend']} | {row['precision']} | failed: {row['error']} |"
                         + " |" * 8)
            continue
        lat = row["latency_ms"]
        speed = f"{eager[_shape(row)] / lat['p50']:.2f}x" if _shape(row) in eager else "-"
        tflops = f"{row['achieved_tflops']:.3f}" if "achieved_tflops" in row else "-"
        lines.append(f"| {_shape(row)} | {row['backend']} | {row['precision']} | {lat['p50']:.1f} | {lat['p90']:.1f} | "
                     f"{lat['p99']:.1f} | {row['fps']:.2f} | {speed} | {tflops} | {_memory(row)} | {row['setup_s']:.1f} "
                     f"| {row['iterations']} |")
    # Only where frames cross to a device: on CPU the split is all compute.
    split_rows = [r for r in doc["results"] if r.get("split_ms", {}).get("h2d_ms", 0) + r.get("split_ms", {}).get("d2h_ms", 0) > 0]
    if split_rows:
        lines += ["", "## Host-to-device, compute, device-to-host (median ms)", "",
                  "| shape NxHxW | backend | h2d | compute | d2h | total |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {_shape(r)} | {r['backend']} | {r['split_ms']['h2d_ms']:.2f} | {r['split_ms']['compute_ms']:.2f} | "
                  f"{r['split_ms']['d2h_ms']:.2f} | {r['split_ms']['total_ms']:.2f} |" for r in split_rows]
    lines += ["", "## Best batch (highest frames/s)", "", "| backend | resolution | batch | frames/s |",
              "| --- | --- | ---: | ---: |"]
    lines += [f"| {b['backend']} | {b['resolution']} | {b['batch']} | {b['fps']:.2f} |" for b in doc["best_batch"]]
    lines += ["", f"## Model cost ({doc['flops']['method']})", "", "| shape NxHxW | GFLOPs per frame | by op (GFLOPs per batch) |",
              "| --- | ---: | --- |"]
    for label, count in doc["flops"]["shapes"].items():
        ops = ", ".join(f"{op} {n / 1e9:.1f}" for op, n in count["by_op"].items())
        lines.append(f"| {label} | {count['per_frame'] / 1e9:.1f} | {ops} |")
    lines += ["", "## End-to-end video (`kanet run`: decode + inference + encode)", "", _video_line(doc["video"])]
    if doc.get("engine"):
        e = doc["engine"]
        lines += ["", "## Engine", "", f"{e['tensorrt']['flavour']} {e['tensorrt']['version']}, {e['mib']} MiB, "
                  f"built in {e['build_seconds']} s for {', '.join(e['targets'])}, profile {e['profile']}"]
    lines += ["", "## Targets (recorded, not asserted)", "", "| target | result |", "| --- | --- |"]
    lines += [f"| {t['description']} | {t['detail']}{'; next: ' + t['next_step'] if 'next_step' in t else ''} |"
              for t in doc["targets"]]
    for target_id, found in doc.get("profiles", {}).items():
        lines += ["", f"### Profile for {target_id} (top op types, ms per call, share)", ""]
        for who, ops in found.items():
            lines.append(f"- {who}: " + ", ".join(f"{o['op']} {o['ms_per_call']:.0f} ({o['share']:.0%})" for o in ops))
    if doc["skipped"]:
        lines += ["", "## Not run", ""] + [f"- {name}: {why}" for name, why in doc["skipped"].items()]
    return "\n".join(lines) + "\n"


def _video_line(video: dict) -> str:
    if "skipped" in video or "error" in video:
        return f"Not measured: {video.get('skipped') or video.get('error')}."
    clip = video["clip"]
    lat = video["summary"].get("latency_ms") or {}
    compute = (video["summary"].get("inference") or {}).get("ms_per_frame", {}).get("compute_ms")
    return (f"{clip['frames']} frames at {clip['height']}x{clip['width']} ({clip['codec']}) through "
            f"`{video['command']}`: {video['fps']:.2f} frames/s"
            + (f", latency p50 {lat['p50']:.1f} ms" if "p50" in lat else "")
            + (f", inference {compute:.1f} ms per frame inside the pipeline" if compute else "")
            + f"; the whole process (start-up and model load included) took {video['process_wall_s']} s. "
            f"Reference: {video['reference_backend']} model-only at the same size.")


def plot(doc: dict, path: Path) -> Path:
    """p50 latency per backend per shape (bars, log scale), p90 as the whisker."""
    rows = [r for r in doc["results"] if "latency_ms" in r]
    shapes = list(dict.fromkeys(_shape(r) for r in rows))
    names = list(dict.fromkeys(r["backend"] for r in rows))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(shapes) * max(len(names), 1) * 0.5), 4.5))
    for i, name in enumerate(names):
        xs, p50, p90 = [], [], []
        for j, shape in enumerate(shapes):
            row = next((r for r in rows if r["backend"] == name and _shape(r) == shape), None)
            if row:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                p50.append(row["latency_ms"]["p50"])
                p90.append(row["latency_ms"]["p90"] - row["latency_ms"]["p50"])
        precision = next(r["precision"] for r in rows if r["backend"] == name)
        ax.bar(xs, p50, width, yerr=[[0] * len(p90), p90], capsize=2, label=f"{name} ({precision})")
    ax.set_yscale("log")
    ax.set_xticks(range(len(shapes)), shapes)
    ax.set_xlabel("batch x height x width")
    ax.set_ylabel("latency per batch, ms (p50, whisker to p90)")
    ax.set_title(f"KA-Net latency: {doc['system']['device']}", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare(a: dict, b: dict) -> str:
    """A table of B against A for every backend and shape both measured; ValueError if none."""
    index = {(r["backend"], _shape(r)): r for r in a["results"] if "latency_ms" in r}
    pairs = [(index[(r["backend"], _shape(r))], r) for r in b["results"]
             if "latency_ms" in r and (r["backend"], _shape(r)) in index]
    if not pairs:
        raise ValueError("the two results files share no (backend, shape) measurement")
    header = [f"A: {a['system']['device']}, {a['system']['started_at']}, commit {(a['system']['git']['commit'] or '?')[:10]}",
              f"B: {b['system']['device']}, {b['system']['started_at']}, commit {(b['system']['git']['commit'] or '?')[:10]}",
              "B/A p50: below 1 means B is faster; fps B/A: above 1 means B has the higher throughput.", "",
              f"{'shape':16s} {'backend':18s} {'A p50 ms':>10s} {'B p50 ms':>10s} {'B/A p50':>8s} {'fps B/A':>8s}"]
    body = [f"{_shape(rb):16s} {rb['backend']:18s} {ra['latency_ms']['p50']:10.2f} {rb['latency_ms']['p50']:10.2f} "
            f"{rb['latency_ms']['p50'] / ra['latency_ms']['p50']:8.3f} {rb['fps'] / ra['fps']:8.3f}" for ra, rb in pairs]
    return "\n".join(header + body)
