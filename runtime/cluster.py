"""`kanet run --cluster`: the run's sources spread over Ray actors (runtime.cluster_worker), one per GPU or
per few CPU cores (runtime.cluster_plan), with one progress display and one summary.

Work goes to whichever worker is free; a worker that dies (its process or its node) has its unfinished work
started again on another, at most MAX_RERUNS times. Ray is imported only here and in the worker, so a run
without --cluster never loads it.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .cluster_plan import Node, Slot, plan_workers
from .cluster_summary import Part, run_summary
from .cluster_worker import Done, ModelSpec, PipelineOptions, Work, Worker
from .errors import DehazeError, KanetError
from .progress import progress
from .segments import PacketIndex, Segment, join, parts_folder, segment_count, segment_sink
from .sinks import ImageFolder, Sink
from .sinks import VideoFile as VideoSink
from .sources import Camera, Source, VideoFile
from .summary import PartReport, RunSummary, WorkerReport

log = logging.getLogger("runtime")

MAX_RERUNS = 2      # a piece of work whose worker died is started again at most this often
POLL_S = 0.5        # how often the progress display asks the workers
START_TIMEOUT_S = 300  # workers wait for free CPUs/GPUs this long at most (a busy cluster), then the run stops


def check_address(text: str) -> str:
    """`local`, `auto` or `ray://HOST:PORT` (Ray Client, which fails in seconds where a bare GCS address given
    to ray.init would hang for minutes); anything else is refused."""
    host, _, port = text.removeprefix("ray://").rpartition(":")
    if text in ("local", "auto") or (text.startswith("ray://") and host and port.isdigit()):
        return text
    raise DehazeError(f"--cluster: expected local, auto or ray://HOST:PORT, got {text!r}")


@contextlib.contextmanager
def connect(address: str) -> Iterator[None]:
    """Connect to (or, for `local`, start) a Ray cluster for the run and leave it afterwards; a program that is
    connected already (ray.init) runs on that cluster."""
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        with warnings.catch_warnings():  # Ray's client warns before it raises; the error line says it all
            warnings.simplefilter("ignore")
            if address == "local":
                ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR)
            else:
                ray.init(address=address, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DehazeError(f"--cluster {address}: cannot reach a Ray cluster ({str(exc).splitlines()[0]})") from None
    try:
        yield
    finally:
        ray.shutdown()


def cluster_nodes() -> list[Node]:
    import ray

    return [Node(n["NodeID"], n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
            for n in ray.nodes() if n["Alive"]]


@dataclass
class _Worker:
    name: str
    slot: Slot
    actor: object
    started: float
    report: WorkerReport | None = None
    busy: tuple[Work, object, float] | None = None  # the work, its result ref, when it began
    done_frames: int = 0                            # progress of finished work


class ClusterRun:
    """Like runtime.pipeline.Pipeline, for a cluster: run() processes every source and returns the summary,
    which `self.summary` holds however the run ends."""

    def __init__(self, address: str, model: ModelSpec, sources: list[Source], sinks: list[Sink | None],
                 options: PipelineOptions, workers: int | None = None, progress: bool | None = None) -> None:
        self._address = address
        self._model, self._sources, self._sinks, self._options = model, sources, sinks, options
        self._workers_wanted, self._progress = workers, progress
        self._parts: list[Part] = []
        self._workers: list[_Worker] = []
        self._interrupted = False
        self._join_error: KanetError | None = None
        self.summary: RunSummary | None = None

    # -- workers ---------------------------------------------------------------------------
    def _start_workers(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        slots = plan_workers(cluster_nodes(), self._workers_wanted, use_gpus=self._model.device != "cpu")
        remote = ray.remote(Worker)
        run = uuid.uuid4().hex[:8]
        for i, slot in enumerate(slots):
            # named kanet-RUN-worker-N, so `ray.get_actor` finds a run's workers (to inspect one, or to kill it)
            actor = remote.options(name=f"kanet-{run}-worker-{i + 1}", num_cpus=slot.cpus, num_gpus=slot.gpus,
                                   max_concurrency=2,
                                   scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node.id, soft=False)
                                   ).remote(self._model, slot.threads, self._options.cwd)
            self._workers.append(_Worker(f"worker-{i + 1}", slot, actor, time.perf_counter()))
        asked = [w.actor.ready.remote() for w in self._workers]
        ready, _ = ray.wait(asked, num_returns=len(asked), timeout=START_TIMEOUT_S)
        if len(ready) < len(asked):
            raise DehazeError(f"{len(asked) - len(ready)} of {len(asked)} workers did not start within "
                              f"{START_TIMEOUT_S} s: the cluster's CPUs or GPUs are taken by other work "
                              "(`ray status`), or give fewer --workers")
        for worker, ref in zip(self._workers, asked):
            try:
                start = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # its node went while it started: the others go on
                worker.report = WorkerReport(worker.name, worker.slot.node.address, worker.slot.describe(),
                                             0.0, 0.0, 0, 0, 0.0, 0.0, died=True)
                log.warning("%s on %s died while starting (%s)", worker.name, worker.slot.node.address,
                            _first_line(exc))
                continue
            if start.error:  # every worker loads the same model: the first error is the run's
                error = KanetError(start.error)
                error.exit_status = start.exit_status
                raise error
            worker.report = WorkerReport(worker.name, start.node, worker.slot.describe(),
                                         round(time.perf_counter() - worker.started, 3), start.load_seconds,
                                         0, 0, 0.0, 0.0)
        if not self._alive():
            raise DehazeError("no worker started: every one died while loading the model")

    def _check_live_sources(self) -> None:
        live = [s.label for s in self._sources if s.expected is None and s.kind in ("stream", "camera")]
        if len(live) > len(self._workers):
            raise DehazeError(f"{len(live)} live sources ({', '.join(live)}) each hold a worker for as long as they "
                              f"run, and the cluster has {len(self._workers)} workers: give --workers "
                              f"{len(live)} or more, or fewer sources")

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        import ray

        started = None
        try:
            with connect(self._address):
                self._start_workers()
                self._check_live_sources()
                started = time.perf_counter()  # as a single-process run, the time after the model is loaded
                self._parts = self._plan_parts(ray.get_runtime_context().get_node_id())
                try:
                    self._schedule()
                finally:  # free the cluster's resources now, not when the handles are collected
                    for worker in self._workers:
                        ray.kill(worker.actor)
                self._join_segments()
            self._raise_first_error()
        finally:
            self.summary = run_summary(self._sources, self._sinks, self._parts, self._options.batch,
                                       time.perf_counter() - started if started else 0.0, self._interrupted)
            self.summary.cluster = self._address
            self.summary.workers = [w.report for w in self._workers if w.report is not None]
        return self.summary

    def _schedule(self) -> None:
        import ray

        pending = deque(self._parts)
        expected = [s.expected for s in self._sources]
        total = None if None in expected else sum(min(e, self._options.max_frames or e) for e in expected)
        bar = progress(total, self._progress)
        counted = 0
        try:
            while pending or self._running():
                try:
                    self._assign(pending)
                    refs = {w.busy[1]: w for w in self._running()}
                    ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                    for ref in ready:
                        self._collect(refs[ref], pending)
                    now = self._accounted()
                    bar.update(now - counted)
                    counted = now
                except KeyboardInterrupt:
                    if self._interrupted:
                        raise
                    self._interrupted = True
                    log.warning("stopping: finishing the frames in flight (Ctrl-C again to abort)")
                    pending.clear()
                    for worker in self._running():
                        worker.actor.stop.remote()
        finally:
            bar.close()

    def _raise_first_error(self) -> None:
        """An error that ended a piece of work (an output that cannot be written) ends the run, as it would a
        single-process one, once every other piece is done."""
        first = next((p.done for p in self._parts if p.done and p.done.error), None)
        if first is not None:
            error = KanetError(first.error)
            error.exit_status = first.exit_status
            raise error
        if self._join_error is not None:
            raise self._join_error

    # -- segments --------------------------------------------------------------------------
    def _plan_parts(self, here: str) -> list[Part]:
        """A part per source, or per segment of a video file long enough to share (runtime.segments); a camera
        stays on the machine kanet runs on."""
        indexes = {i: PacketIndex.read(s.spec) for i, s in enumerate(self._sources) if self._splittable(i)}
        for i, index in indexes.items():
            if index is not None:  # mkv and others carry no frame count: the packets give it
                self._sources[i].expected = len(index.times)
        total = sum(len(x.times) for x in indexes.values() if x is not None)
        parts = []
        for i, (source, sink) in enumerate(zip(self._sources, self._sinks)):
            index = indexes.get(i)
            spans = index.spans(segment_count(len(index.times), total, len(self._workers))) if index else []
            if len(spans) < 2:
                parts.append(Part(Work(i, source, sink, node_id=here if isinstance(source, Camera) else None)))
                continue
            for span in spans:
                segment = Segment(source, span)
                parts.append(Part(Work(i, segment, segment_sink(sink, segment), segment=span.index)))
        return parts

    def _splittable(self, i: int) -> bool:
        source, sink = self._sources[i], self._sinks[i]
        return (isinstance(source, VideoFile) and source.stats.status != "failed" and len(self._workers) > 1
                and not self._options.max_frames and isinstance(sink, (VideoSink, ImageFolder)))

    def _join_segments(self) -> None:
        """Each split video output joined from its parts once all are written; a source with a part that failed
        gets no output (its parts are removed)."""
        for i, sink in enumerate(self._sinks):
            parts = [p for p in self._parts if p.work.source_index == i and p.work.segment is not None]
            if not parts or not isinstance(sink, VideoSink):
                continue
            reports = [p.done.summary.sources[0] if p.done else None for p in parts]
            if self._interrupted or any(r is None or r.status != "ok" or r.output is None for r in reports):
                shutil.rmtree(parts_folder(sink), ignore_errors=True)
                continue
            try:
                join(sink, [Path(r.output) for r in reports], sum(r.frames_out for r in reports))
            except KanetError as exc:
                shutil.rmtree(parts_folder(sink), ignore_errors=True)
                self._join_error = self._join_error or exc

    def _running(self) -> list[_Worker]:
        return [w for w in self._workers if w.busy is not None]

    def _alive(self) -> list[_Worker]:
        return [w for w in self._workers if not w.report.died]

    def _assign(self, pending: deque[Part]) -> None:
        for worker in self._alive():
            if worker.busy is not None:
                continue
            part = next((p for p in pending if p.work.node_id in (None, worker.slot.node.id)), None)
            if part is None:
                continue
            pending.remove(part)
            worker.busy = (part.work, worker.actor.process.remote(part.work, self._options), time.perf_counter())
        alive = self._alive()
        for part in [p for p in pending if not any(p.work.node_id in (None, w.slot.node.id) for w in alive)]:
            pending.remove(part)  # no worker is left that may take it
            part.errors.append("no worker left to take it" if not alive else
                               "no worker runs on the machine kanet runs on, where this camera is")

    def _part(self, work: Work) -> Part:
        return next(p for p in self._parts if p.work is work)

    def _collect(self, worker: _Worker, pending: deque[Part]) -> None:
        import ray

        work, ref, began = worker.busy
        worker.busy = None
        part = self._part(work)
        try:
            done: Done = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # its process or its node died
            worker.report.died = True
            part.errors.append(f"{worker.name} on {worker.slot.node.address} died ({_first_line(exc)})")
            if part.reruns < MAX_RERUNS:
                part.reruns += 1
                log.warning("%s: %s; started again on another worker (%d/%d)", work.source.label, part.errors[-1],
                            part.reruns, MAX_RERUNS)
                pending.appendleft(part)
            return
        except ray.exceptions.RayTaskError as exc:  # a bug in the worker: this part fails, the run goes on
            part.errors.append(f"{worker.name}: internal error ({_first_line(exc.cause or exc)})")
            return
        seconds = time.perf_counter() - began
        part.done = done
        report = done.summary.sources[0]
        span = work.source.span if isinstance(work.source, Segment) else None
        part.report = PartReport(work.segment, span.start_s if span else None, span.end_s if span else None,
                                 worker.name, worker.report.node, report.status, report.frames_in, report.frames_out,
                                 report.undecodable, round(seconds, 3), part.reruns)
        w = worker.report
        w.parts += 1
        w.frames_out += report.frames_out
        w.busy_seconds = round(w.busy_seconds + seconds, 3)
        w.fps = round(w.frames_out / w.busy_seconds, 3) if w.busy_seconds > 0 else 0.0
        worker.done_frames += report.frames_out + report.undecodable

    def _accounted(self) -> int:
        """Frames written or found undecodable by every worker so far (dead workers' work is redone)."""
        import ray

        asked = [w.actor.progress.remote() for w in self._running()]
        answered, _ = ray.wait(asked, num_returns=len(asked), timeout=POLL_S) if asked else ([], [])
        counts = []
        for ref in answered:
            with contextlib.suppress(ray.exceptions.RayError):  # a worker that just died counts nothing
                counts.append(ray.get(ref))
        return sum(w.done_frames for w in self._workers) + sum(counts)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
