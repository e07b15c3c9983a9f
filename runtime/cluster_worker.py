"""A cluster worker (run as a Ray actor by runtime.cluster): loads the model once, then runs the runtime's own
Pipeline on each piece of work it is handed. The work carries the source and sink objects a single-process
run would use, so the worker reads the source where it lies (a file on shared storage, a URL, a camera of
its node) and writes the same output under the same name: no frames travel between machines."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from .dehazer import Dehazer
from .errors import DehazeError, KanetError
from .openvino_backend import OpenVinoOptions
from .pipeline import Pipeline
from .sinks import Sink
from .sources import Source
from .summary import RunSummary


@dataclass(frozen=True)
class ModelSpec:
    """Dehazer.load's arguments, the same for every worker."""
    path: str
    backend: str = "auto"
    device: str = "auto"
    tile: object = None
    tile_overlap: int = 32
    half: bool = False
    max_side: int | None = None
    verify: bool = True
    openvino: OpenVinoOptions | None = None


@dataclass(frozen=True)
class PipelineOptions:
    batch: int = 1
    side_by_side: bool = False
    max_frames: int | None = None
    cwd: str | None = None  # the driver's working folder: relative paths mean the same on every node (shared storage)


@dataclass
class Work:
    """One source, or one time segment of a video file (its source is then a runtime.segments.Segment)."""
    source_index: int
    source: Source
    sink: Sink | None
    segment: int | None = None
    node_id: str | None = None  # only a worker on this node may take it (a camera of the machine kanet runs on)


@dataclass(frozen=True)
class WorkerStart:
    node: str
    load_seconds: float
    error: str | None = None
    exit_status: int = 0


@dataclass
class Done:
    summary: RunSummary
    error: str | None = None   # a KanetError that ended this piece of work (e.g. an output that cannot be written)
    exit_status: int = 0


class Worker:
    def __init__(self, model: ModelSpec, threads: int, cwd: str | None) -> None:
        import ray

        self._node = ray.util.get_node_ip_address()
        started = time.perf_counter()
        self._dehazer, self._start_error = None, None
        try:
            if cwd:  # one worker per process (Ray actor): no other work shares this process's folder
                try:
                    os.chdir(cwd)
                except OSError as exc:
                    raise DehazeError(f"{cwd}: the folder kanet run runs in is not on node {self._node} "
                                      f"({exc.strerror}); the nodes need the same shared storage at the same "
                                      "path") from None
            self._dehazer = Dehazer.load(model.path, model.backend, model.device, model.tile, model.tile_overlap,
                                         model.half, model.max_side, verify=model.verify, openvino=model.openvino,
                                         threads=threads)  # this worker's share of the cores, on any CPU back-end
        except KanetError as exc:  # bad input: the driver says it in one line, as a single-process run does
            self._start_error = exc
        self._load_seconds = time.perf_counter() - started
        self._pipeline: Pipeline | None = None
        self._lock = threading.Lock()

    def ready(self) -> WorkerStart:
        error = self._start_error
        return WorkerStart(self._node, round(self._load_seconds, 3), None if error is None else str(error),
                           0 if error is None else error.exit_status)

    def process(self, work: Work, options: PipelineOptions) -> Done:
        pipeline = Pipeline(self._dehazer, [work.source], [work.sink], batch=options.batch,
                            side_by_side=options.side_by_side, max_frames=options.max_frames, progress=False)
        with self._lock:
            self._pipeline = pipeline
        try:
            pipeline.run()
        except KanetError as exc:
            return Done(pipeline.summary, str(exc), exc.exit_status)
        finally:
            with self._lock:
                self._pipeline = None
        return Done(pipeline.summary)

    def progress(self) -> int:
        """Frames of the current work accounted for so far (called from the driver while `process` runs)."""
        with self._lock:
            return self._pipeline.accounted if self._pipeline else 0

    def stop(self) -> None:
        """Ctrl-C on the driver: stop reading, finish the frames in flight, close the output."""
        with self._lock:
            if self._pipeline:
                self._pipeline.stop()
