"""The JSON sidecar written next to every engine, and the checks made before loading one.

Torch-free: the runtime reads manifests too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import DehazeError

MANIFEST_SUFFIX = ".json"
# What loading and checking an engine reads from its manifest, with the type each must have.
REQUIRED = {("engine", "sha256"): str, ("tensorrt", "flavour"): str, ("tensorrt", "version"): str,
            ("precision",): str, ("profiles",): list}


def manifest_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(MANIFEST_SUFFIX)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _lookup(manifest, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(manifest, dict) or key not in manifest:
            return None
        manifest = manifest[key]
    return manifest


def read_manifest(engine_path: str | Path) -> dict:
    """The engine's manifest, holding every REQUIRED key; else a DehazeError naming the file and the problem."""
    path = manifest_path(engine_path)
    if not path.is_file():
        raise DehazeError(f"{engine_path}: no manifest {path.name} beside the engine; rebuild it with `kanet build`")
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise DehazeError(f"{path}: cannot read the engine manifest ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise DehazeError(f"{path}: not a valid engine manifest ({exc}); rebuild the engine with `kanet build`") from None
    wrong = [".".join(keys) for keys, kind in REQUIRED.items() if not isinstance(_lookup(manifest, keys), kind)]
    if wrong:
        raise DehazeError(f"{path}: engine manifest lacks {', '.join(wrong)} (or has the wrong type); "
                          "rebuild the engine with `kanet build`")
    return manifest


def verify_engine(engine_path: str | Path, manifest: dict) -> None:
    """The engine file is the one its manifest describes: not truncated, damaged or replaced since the build."""
    try:
        actual, expected = sha256_file(engine_path), manifest["engine"]["sha256"]
    except OSError as exc:
        raise DehazeError(f"{engine_path}: cannot read the engine ({exc.strerror or exc})") from None
    if actual != expected:
        raise DehazeError(f"{engine_path}: sha256 {actual[:16]}... differs from the {expected[:16]}... in its manifest "
                          f"{manifest_path(engine_path).name}: the engine is damaged or was replaced; rebuild it with "
                          "`kanet build` (`kanet run --no-verify-engine` skips this check)")


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
