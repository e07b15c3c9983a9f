"""The JSON sidecar written next to every engine, and the checks made before loading one.

Torch-free: the runtime reads manifests too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_SUFFIX = ".json"


def manifest_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(MANIFEST_SUFFIX)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(engine_path: str | Path) -> dict:
    path = manifest_path(engine_path)
    if not path.is_file():
        raise FileNotFoundError(f"{engine_path}: no manifest {path.name} beside the engine; rebuild it with `kanet build`")
    return json.loads(path.read_text())


def incompatibility(manifest: dict, flavour: str, version: str, compute_capability: str | None) -> str | None:
    """Why an engine cannot be loaded here, with how to rebuild; None when it can."""
    built = manifest["tensorrt"]
    rebuild = (f"rebuild it here with: kanet build {manifest.get('onnx', {}).get('path', 'MODEL.onnx')} "
               f"--out {Path(manifest.get('engine', {}).get('path', 'engines/')).parent}")
    if built["flavour"] != flavour or built["version"] != version:
        return (f"engine built with {built['flavour']} {built['version']}, this machine has {flavour} {version}; "
                f"{rebuild}")
    targets = manifest.get("targets", {}).get("compute_capabilities")
    if compute_capability and targets and "current" not in targets and compute_capability not in targets:
        return f"engine built for GPUs {', '.join(targets)}, this GPU is {compute_capability}; {rebuild}"
    return None
