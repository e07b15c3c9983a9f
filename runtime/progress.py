"""Progress of long work: a tqdm bar on a terminal, whole lines at an interval otherwise,
so a captured log (file, CI, systemd) stays readable instead of filling with carriage returns."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LineProgress:
    """`dehazing: 120/300 frames, 24.1 fps, ETA 7 s` every `interval` seconds, and a final line; the subset of
    tqdm's interface the commands use (update, reset, set_description, set_postfix, close, `with`)."""

    def __init__(self, total: int | None, desc: str = "dehazing", unit: str = "frame", initial: int = 0,
                 interval: float = 2.0, stream=None) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream or sys.stderr
        self.done, self._counted_from, self.postfix = initial, initial, ""
        self._start = self._last = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.perf_counter() - self._last >= self.interval:
            self._print()

    def reset(self, total: int | None = None) -> None:
        self.total, self.done, self._counted_from, self.postfix = total, 0, 0, ""
        self._start = self._last = time.perf_counter()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def _print(self) -> None:
        self._last = time.perf_counter()
        seconds = self._last - self._start
        rate = (self.done - self._counted_from) / seconds if seconds > 0 else 0.0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}s" if self.total else f"{self.desc}: {self.done} {self.unit}s"
        text += f", {rate:.1f} fps" if self.unit == "frame" else f", {rate:.2f} {self.unit}s/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / rate:.0f} s"
        if self.postfix:
            text += f"; {self.postfix}"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """The final line, once (a second close, as tqdm allows, prints nothing)."""
        if not self._closed:
            self._closed = True
            self._print()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def progress(total: int | None, enabled: bool | None = None, desc: str = "dehazing", unit: str = "frame",
             initial: int = 0, leave: bool = True):
    """enabled None: a bar when stderr is a terminal, else lines; False: nothing. leave False: the bar is
    cleared when done (one step of a longer job); lines stay, a log keeps its history."""
    if enabled is None and not sys.stderr.isatty():
        return LineProgress(total, desc, unit, initial)
    return tqdm(total=total, unit=unit, desc=desc, initial=initial, dynamic_ncols=True, leave=leave,
                disable=not enabled if enabled is not None else False)
