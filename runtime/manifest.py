"""The JSON sidecar written next to every engine, and the checks made before loading one.

Torch-free: the runtime reads manifests too.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import write_bytes
from .errors import DehazeError

MANIFEST_SUFFIX = ".json"
FORMAT, VERSION = "kanet-engine-manifest", 1


@dataclass(frozen=True)
class FileRecord:
    path: str
    sha256: str


@dataclass(frozen=True)
class EngineFile(FileRecord):
    bytes: int = 0
    cached_copy: str | None = None  # the build in the user cache this file was copied from


@dataclass(frozen=True)
class TensorRTBuild:
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    version: str


@dataclass(frozen=True)
class ShapeProfile:
    """An optimization profile's (batch, height, width) limits."""
    min: list[int]
    opt: list[int]
    max: list[int]
    axes: str = "batch,height,width"


@dataclass
class EngineManifest:
    """What an engine was built from and for: the JSON sidecar beside every .plan."""
    engine: EngineFile
    tensorrt: TensorRTBuild
    precision: str
    profiles: list[ShapeProfile]
    onnx: FileRecord | None = None
    checkpoint_sha256: str | None = None
    cache_key: str | None = None
    targets: list[str] = field(default_factory=list)  # compute capabilities, or ["current"]
    fp32_nodes: list[str] = field(default_factory=list)
    layer_precisions: dict = field(default_factory=dict)
    attention_forms: list = field(default_factory=list)  # per (heads, head size): native layer or chain, and why
    io: dict = field(default_factory=dict)
    builder: dict = field(default_factory=dict)
    build_seconds: float | None = None
    host: dict = field(default_factory=dict)
    built_at: str | None = None

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "engine": asdict(self.engine),
                "checkpoint": {"sha256": self.checkpoint_sha256},
                "onnx": asdict(self.onnx) if self.onnx else None, "cache_key": self.cache_key,
                "precision": self.precision, "fp32_nodes": self.fp32_nodes, "layer_precisions": self.layer_precisions,
                "attention_forms": self.attention_forms,
                "io": self.io, "profiles": [asdict(p) for p in self.profiles], "tensorrt": asdict(self.tensorrt),
                "targets": {"compute_capabilities": self.targets}, "builder": self.builder,
                "build_seconds": self.build_seconds, "host": self.host, "built_at": self.built_at}

    @classmethod
    def from_json(cls, doc) -> EngineManifest:
        """The manifest in `doc`; ValueError naming every required key that is missing or of the wrong type."""
        wrong = [".".join(keys) for keys, kind in REQUIRED.items() if not isinstance(_lookup(doc, keys), kind)]
        if wrong:
            raise ValueError(f"engine manifest lacks {', '.join(wrong)} (or has the wrong type)")
        try:
            engine = doc["engine"]
            onnx = doc.get("onnx") or None
            return cls(
                engine=EngineFile(engine.get("path", ""), engine["sha256"], engine.get("bytes", 0),
                                  engine.get("cached_copy")),
                tensorrt=TensorRTBuild(doc["tensorrt"]["flavour"], doc["tensorrt"]["version"]),
                precision=doc["precision"],
                profiles=[ShapeProfile(**p) for p in doc["profiles"]],
                onnx=FileRecord(onnx["path"], onnx["sha256"]) if onnx else None,
                checkpoint_sha256=(doc.get("checkpoint") or {}).get("sha256"), cache_key=doc.get("cache_key"),
                targets=(doc.get("targets") or {}).get("compute_capabilities", []),
                fp32_nodes=doc.get("fp32_nodes", []), layer_precisions=doc.get("layer_precisions", {}),
                attention_forms=doc.get("attention_forms", []),
                io=doc.get("io", {}), builder=doc.get("builder", {}), build_seconds=doc.get("build_seconds"),
                host=doc.get("host", {}), built_at=doc.get("built_at"))
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"engine manifest has a malformed entry ({type(exc).__name__}: {exc})") from None

    def write(self, engine_path: str | Path) -> Path:
        path = manifest_path(engine_path)
        write_bytes(path, json.dumps(self.to_json(), indent=2).encode())
        return path


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


def read_manifest(engine_path: str | Path) -> EngineManifest:
    """The engine's manifest, holding every REQUIRED key; else a DehazeError naming the file and the problem."""
    path = manifest_path(engine_path)
    if not path.is_file():
        raise DehazeError(f"{engine_path}: no manifest {path.name} beside the engine; rebuild it with `kanet build`")
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise DehazeError(f"{path}: cannot read the engine manifest ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise DehazeError(f"{path}: not a valid engine manifest ({exc}); rebuild the engine with `kanet build`") from None
    try:
        return EngineManifest.from_json(doc)
    except ValueError as exc:
        raise DehazeError(f"{path}: {exc}; rebuild the engine with `kanet build`") from None


def verify_engine(engine_path: str | Path, manifest: EngineManifest) -> None:
    """The engine file is the one its manifest describes: not truncated, damaged or replaced since the build."""
    try:
        actual, expected = sha256_file(engine_path), manifest.engine.sha256
    except OSError as exc:
        raise DehazeError(f"{engine_path}: cannot read the engine ({exc.strerror or exc})") from None
    if actual != expected:
        raise DehazeError(f"{engine_path}: sha256 {actual[:16]}... differs from the {expected[:16]}... in its manifest "
                          f"{manifest_path(engine_path).name}: the engine is damaged or was replaced; rebuild it with "
                          "`kanet build` (`kanet run --no-verify-engine` skips this check)")


def incompatibility(manifest: EngineManifest, flavour: str, version: str, compute_capability: str | None) -> str | None:
    """Why an engine cannot be loaded here, with how to rebuild; None when it can."""
    built = manifest.tensorrt
    rebuild = (f"rebuild it here with: kanet build {manifest.onnx.path if manifest.onnx else 'MODEL.onnx'} "
               f"--out {Path(manifest.engine.path or 'engines/').parent}")
    if built.flavour != flavour or built.version != version:
        return f"engine built with {built.flavour} {built.version}, this machine has {flavour} {version}; {rebuild}"
    targets = manifest.targets
    if compute_capability and targets and "current" not in targets and compute_capability not in targets:
        return f"engine built for GPUs {', '.join(targets)}, this GPU is {compute_capability}; {rebuild}"
    return None
