"""Decode, infer and encode in their own threads, joined by bounded queues.

One decoder thread per source feeds one queue (a full queue holds the decoders back, so
memory stays bounded); the inference thread batches what is waiting, grouped by frame size,
and passes everything on in arrival order, so each source's frames stay in order; the
calling thread encodes, shows and counts. Every frame read is accounted for: written, or
reported undecodable. Ctrl-C (or q in the window) stops reading and finishes the frames in
flight, so video files are closed properly; a second Ctrl-C aborts, and outputs are abandoned
(a video stays NAME.partial.EXT) rather than finished.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from .backend import Timings
from .dehazer import Dehazer
from .errors import DehazeError
from .images import as_bgr8
from .progress import progress
from .sinks import Sink, Window
from .sources import Source
from .summary import InferenceStats, RunSummary

log = logging.getLogger("runtime")


@dataclass
class _Frame:
    source: int
    image: np.ndarray
    time: float | None
    name: str | None
    born: float                      # when decoded (perf_counter): latency runs from here to written
    output: np.ndarray | None = None


@dataclass
class _End:
    source: int


_DONE = object()


def _percentiles(values_ms: list[float]) -> dict | None:
    if not values_ms:
        return None
    p50, p90, p99 = np.percentile(values_ms, [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2),
            "max": round(float(max(values_ms)), 2)}


class Pipeline:
    def __init__(self, dehazer: Dehazer, sources: list[Source], sinks: list[Sink | None], *, batch: int = 1,
                 side_by_side: bool = False, window: Window | None = None, max_frames: int | None = None,
                 progress: bool | None = None) -> None:
        if batch < 1:
            raise DehazeError(f"batch {batch}: must be at least 1")
        self._dehazer, self._sources, self._sinks = dehazer, sources, sinks
        self._batch, self._side_by_side, self._window = batch, side_by_side, window
        self._max_frames, self._progress = max_frames, progress
        self._decoded: queue.Queue = queue.Queue(maxsize=2 * batch + len(sources))
        self._results: queue.Queue = queue.Queue(maxsize=2 * batch)
        self._stop = threading.Event()    # stop reading; finish what is in flight
        self._abort = threading.Event()   # an error: every thread leaves now
        self._error: BaseException | None = None
        self._interrupted = False
        self._written = [0] * len(sources)
        self._latencies: list[float] = []
        self._batches: list[tuple[int, Timings]] = []
        self.summary: RunSummary | None = None  # set when run() ends, however it ends

    @property
    def accounted(self) -> int:
        """Frames written or counted undecodable so far: what a progress display counts (read from another
        thread by a cluster worker, which reports it to the run's one progress display)."""
        return sum(self._written) + sum(s.stats.undecodable for s in self._sources)

    def stop(self) -> None:
        """Stop reading and finish the frames in flight, as the first Ctrl-C does (from another thread)."""
        self._stop.set()

    # -- plumbing --------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._abort.set()
        self._stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self._abort.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def _on_sigint(self, signum, frame) -> None:
        if self._stop.is_set():
            self._interrupted = True
            raise KeyboardInterrupt
        self._interrupted = True
        self._stop.set()  # before the message: a second Ctrl-C may strike while it is printed
        log.warning("stopping: finishing the frames in flight (Ctrl-C again to abort)")

    # -- stages ----------------------------------------------------------------------------
    def _read_source(self, index: int, source: Source) -> None:
        frames = source.frames(self._stop)
        try:
            for decoded in frames:
                try:
                    image = as_bgr8(decoded.image, source.label)
                except DehazeError as exc:  # e.g. a float TIFF: read, but not a picture the model takes
                    source.stats.frames -= 1
                    source.stats.undecodable += 1
                    source.stats.note(str(exc))
                    continue
                if not self._put(self._decoded, _Frame(index, image, decoded.time, decoded.name, time.perf_counter())):
                    return
                if self._max_frames and source.stats.frames >= self._max_frames:
                    source.stats.status = "ok"
                    break
        except Exception as exc:  # one broken source must not take the others down
            source.stats.fail("failed", f"{type(exc).__name__}: {exc}")
        finally:
            frames.close()
            if source.stats.status == "pending":
                source.stats.status = "stopped"
            self._put(self._decoded, _End(index))

    def _infer(self) -> None:
        ended = 0
        try:
            while ended < len(self._sources):
                first = self._get(self._decoded)
                if first is _DONE:
                    return
                items = [first]
                count = isinstance(first, _Frame)
                while count < self._batch:
                    try:
                        item = self._decoded.get_nowait()
                    except queue.Empty:
                        break
                    items.append(item)
                    count += isinstance(item, _Frame)
                groups: dict[tuple[int, ...], list[_Frame]] = {}
                for item in items:
                    if isinstance(item, _Frame):
                        groups.setdefault(item.image.shape, []).append(item)
                for group in groups.values():
                    out, timings = self._dehazer.infer_timed(np.stack([f.image for f in group]))
                    self._batches.append((len(group), timings))
                    for frame, result in zip(group, out):
                        frame.output = result
                for item in items:
                    ended += isinstance(item, _End)
                    if not self._put(self._results, item):
                        return
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._put(self._results, _DONE)

    def _encode(self, bar) -> None:
        while (item := self._get(self._results)) is not _DONE:
            if isinstance(item, _End):
                sink = self._sinks[item.source]
                if sink is not None:
                    sink.close()
                bar.update(self._sources[item.source].stats.undecodable)  # accounted for too
                continue
            image = np.hstack([item.image, item.output]) if self._side_by_side else item.output
            sink = self._sinks[item.source]
            if sink is not None:
                sink.write(image, item.time, item.name)
            if self._window and not self._window.show(self._sources[item.source].label, image):
                self._stop.set()
            self._written[item.source] += 1
            self._latencies.append((time.perf_counter() - item.born) * 1e3)
            bar.update(1)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Process every source to its end (or until stopped); the summary of what happened. On an error or
        a second Ctrl-C the exception propagates, and `self.summary` still holds the summary."""
        started = time.perf_counter()
        threads = [threading.Thread(target=self._read_source, args=(i, s), name=f"decode-{s.label}", daemon=True)
                   for i, s in enumerate(self._sources)]
        threads.append(threading.Thread(target=self._infer, name="infer", daemon=True))
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if main else None
        expected = [s.expected for s in self._sources]
        total = None if None in expected else sum(min(e, self._max_frames or e) for e in expected)
        bar = progress(total, self._progress)
        try:
            for thread in threads:
                thread.start()
            self._encode(bar)
        except BaseException as exc:
            self._fail(exc)
        finally:
            try:
                bar.close()
                self._stop.set()
                for thread in threads:
                    thread.join(timeout=5.0)
            except KeyboardInterrupt as exc:
                self._fail(exc)
            self._finish_sinks()
            if self._window:
                self._window.close()
            if main:
                signal.signal(signal.SIGINT, previous)
            self.summary = self._summary(time.perf_counter() - started)
        if self._error is not None:
            raise self._error
        return self.summary

    def _finish_sinks(self) -> None:
        """Close every output; after a second Ctrl-C (which may have struck mid-frame) abandon them instead,
        so an output is complete under its name or left as a partial file, never broken under its name."""
        aborted = isinstance(self._error, KeyboardInterrupt)
        for sink in self._sinks:
            if sink is None:
                continue
            try:
                if aborted:
                    sink.abandon()
                else:
                    sink.close()
            except KeyboardInterrupt as exc:  # Ctrl-C again while closing: the rest are abandoned
                self._fail(exc)
                self._interrupted = aborted = True
                sink.abandon()
            except Exception as exc:
                self._fail(exc)

    def _summary(self, seconds: float) -> RunSummary:
        reports = [source.report(written, sink) for source, sink, written in zip(self._sources, self._sinks, self._written)]
        frames_in = sum(r.frames_in for r in reports)
        frames_out = sum(self._written)
        undecodable = sum(r.undecodable for r in reports)
        batched = sum(n for n, _ in self._batches)
        per_stage = sum((t for _, t in self._batches), Timings()).per(batched)
        return RunSummary(
            backend=self._dehazer.backend, precision=self._dehazer.precision, batch=self._batch,
            frames_in=frames_in, frames_out=frames_out, undecodable=undecodable,
            dropped_frames=frames_in - undecodable - frames_out,
            seconds=round(seconds, 3), fps=round(frames_out / seconds, 3) if seconds > 0 else 0.0,
            latency_ms=_percentiles(self._latencies),
            inference=InferenceStats(len(self._batches), round(batched / max(len(self._batches), 1), 2), per_stage),
            sources=reports, interrupted=self._interrupted)
