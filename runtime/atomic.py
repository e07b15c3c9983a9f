"""Atomic file writes: into a temporary file beside the target, renamed over it once complete, so a failed
write (disk full, a killed run) never leaves a half-written file under the target's name."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import OutputError


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        # os.open, not tempfile: the file gets the umask's usual permissions, not mkstemp's 0600
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"{path}: could not be written ({exc.strerror or exc})") from None
    finally:
        temporary.unlink(missing_ok=True)  # after a failure (or Ctrl-C); gone already after the rename
