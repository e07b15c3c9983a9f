"""What a `kanet run` did, per source and in all: the summary printed at the end and written to --summary."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .backend import Timings


@dataclass
class PartReport:
    """A piece of a source one cluster worker processed (`kanet run --cluster`): the whole source, or one time
    segment of a video file."""
    segment: int | None        # None: the whole source
    start: float | None        # the segment's first and end presentation time, seconds (None: the whole source)
    end: float | None
    worker: str
    node: str                  # the worker's node (IP address)
    status: str                # as SourceReport.status
    frames_in: int
    frames_out: int
    undecodable: int
    seconds: float
    reruns: int                # times it was started again on another worker after its worker died


@dataclass
class WorkerReport:
    """One cluster worker (a Ray actor): where it ran, what it cost to start and what it did."""
    worker: str
    node: str
    resources: str             # e.g. "1 GPU" or "2 CPU"
    start_seconds: float       # actor start to model loaded, as seen by the driver
    load_seconds: float        # the model load alone
    parts: int
    frames_out: int
    busy_seconds: float
    fps: float                 # frames_out / busy_seconds
    died: bool = False


@dataclass
class SourceReport:
    label: str
    source: str                # as given: a path, a URL or a camera index
    kind: str
    status: str                # ok | stopped | failed | dropped
    frames_in: int             # read: decoded or not
    decoded: int
    undecodable: int
    replayed: int              # seen again after a reconnect and skipped
    retries: int
    errors: list[str]
    frames_out: int
    output: str | None         # the file or folder as kept: whole or partial
    audio: str | None          # copied | none | dropped: <why>; None where nothing was written
    parts: list[PartReport] = field(default_factory=list)  # who did what, on a cluster


@dataclass
class InferenceStats:
    batches: int
    mean_batch: float
    ms_per_frame: Timings


@dataclass
class RunSummary:
    backend: str | None = None
    precision: str | None = None
    batch: int | None = None
    frames_in: int = 0
    frames_out: int = 0
    undecodable: int = 0
    dropped_frames: int = 0    # read but never written: 0 unless aborted
    seconds: float = 0.0
    fps: float = 0.0
    latency_ms: dict | None = None  # p50, p90, p99, max
    inference: InferenceStats | None = None
    sources: list[SourceReport] = field(default_factory=list)
    interrupted: bool = False  # by Ctrl-C (SIGINT)
    cluster: str | None = None  # the Ray address of a --cluster run
    workers: list[WorkerReport] = field(default_factory=list)
    # How the run ended, set by the command that ran it (see `finish`).
    model: str | None = None
    output: str | None = None
    status: str | None = None
    error: str | None = None

    @property
    def outputs(self) -> list[str]:
        return [s.output for s in self.sources if s.output is not None]

    @property
    def streams(self) -> dict[str, list[str]]:
        return {"retried": [s.label for s in self.sources if s.retries],
                "dropped": [s.label for s in self.sources if s.status == "dropped"],
                "failed": [s.label for s in self.sources if s.status == "failed"],
                "audio_dropped": [s.label for s in self.sources if (s.audio or "").startswith("dropped")]}

    def finish(self, model: str, output: str | None, exc: BaseException | None) -> None:
        """Record how the run ended: status interrupted | error | failed (a source dropped or failed) |
        degraded (an output lacks its source's audio) | ok."""
        self.interrupted = self.interrupted or isinstance(exc, KeyboardInterrupt)
        streams = self.streams
        self.status = ("interrupted" if self.interrupted else "error" if exc is not None
                       else "failed" if streams["dropped"] or streams["failed"]
                       else "degraded" if streams["audio_dropped"] else "ok")
        self.error = None if exc is None or self.interrupted else str(exc) or type(exc).__name__
        self.model, self.output = model, output

    def to_json(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("inference", "sources", "workers")}
        doc["inference"] = None if self.inference is None else {
            "batches": self.inference.batches, "mean_batch": self.inference.mean_batch,
            "ms_per_frame": self.inference.ms_per_frame.to_json()}
        doc["sources"] = [asdict(s) for s in self.sources]
        doc["workers"] = [asdict(w) for w in self.workers]
        doc["outputs"], doc["streams"] = self.outputs, self.streams
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> RunSummary:
        inference = doc.get("inference")
        values = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}
        values["inference"] = None if inference is None else InferenceStats(
            inference["batches"], inference["mean_batch"], Timings(**inference["ms_per_frame"]))
        values["sources"] = [SourceReport(**{**s, "parts": [PartReport(**p) for p in s.get("parts", [])]})
                             for s in doc.get("sources", [])]
        values["workers"] = [WorkerReport(**w) for w in doc.get("workers", [])]
        return cls(**values)
