"""The user cache folder: the one place the project keeps what it can rebuild (engines, bench exports).

Resolved as platformdirs does on Linux, so nothing lands in the working folder: `--cache-dir`, else
$KANET_CACHE_DIR, else $XDG_CACHE_HOME/kanet, else ~/.cache/kanet. Inside it, `engines/` holds every
engine built (keyed by ONNX, options and TensorRT) and `bench/` the exports `kanet bench` makes.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ExportError

ENV = "KANET_CACHE_DIR"
HELP = f"cache folder (default ${ENV}, else $XDG_CACHE_HOME/kanet, else ~/.cache/kanet)"


def user_cache_dir(override: str | Path | None = None) -> Path:
    """The cache folder, created if missing; an unusable one is an ExportError that says how to choose another."""
    if override:
        root, origin = Path(override), "--cache-dir"
    elif os.environ.get(ENV):
        root, origin = Path(os.environ[ENV]), f"${ENV}"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # XDG: a relative $XDG_CACHE_HOME is invalid and ignored
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
        root, origin = base / "kanet", "the default"
    root = root.expanduser().absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cache folder {root} ({origin}): cannot create it ({exc.strerror}); "
                          f"choose another with --cache-dir or ${ENV}") from None
    return root


def engines_dir(root: Path) -> Path:
    return root / "engines"


def bench_dir(root: Path) -> Path:
    return root / "bench"
