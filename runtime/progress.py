"""Progress of a run: a tqdm bar on a terminal, whole lines at an interval otherwise,
so a captured log (file, CI, systemd) stays readable instead of filling with carriage returns."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LineProgress:
    """`dehazing: 120/300 frames, 24.1 fps, ETA 7 s` every `interval` seconds, and a final line."""

    def __init__(self, total: int | None, interval: float = 2.0, stream=None) -> None:
        self.total, self.interval, self.stream = total, interval, stream or sys.stderr
        self.done = 0
        self._start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.perf_counter() - self._last >= self.interval:
            self._print()

    def _print(self) -> None:
        self._last = time.perf_counter()
        seconds = self._last - self._start
        fps = self.done / seconds if seconds > 0 else 0.0
        text = f"dehazing: {self.done}/{self.total} frames" if self.total else f"dehazing: {self.done} frames"
        text += f", {fps:.1f} fps"
        if self.total and fps > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / fps:.0f} s"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        self._print()


def progress(total: int | None, enabled: bool | None = None):
    """enabled None: a bar when stderr is a terminal, else lines; False: nothing."""
    if enabled is None and not sys.stderr.isatty():
        return LineProgress(total)
    return tqdm(total=total, unit="frame", desc="dehazing", disable=not enabled if enabled is not None else False)
