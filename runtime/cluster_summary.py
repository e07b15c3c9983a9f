"""The summary of a `kanet run --cluster`: each piece of work's outcome, merged per source (a video done in
segments is one source with its parts listed) and over the run, in the types of runtime.summary."""
from __future__ import annotations

from dataclasses import dataclass, field

from .backend import Timings
from .cluster_worker import Done, Work
from .sinks import Sink
from .sinks import VideoFile as VideoSink
from .sources import Source
from .summary import InferenceStats, PartReport, RunSummary, SourceReport


@dataclass
class Part:
    """One source or segment and what became of it: its result, who did it, how often it was started again."""
    work: Work
    reruns: int = 0
    done: Done | None = None
    report: PartReport | None = None
    errors: list[str] = field(default_factory=list)


def source_report(part: Part) -> SourceReport:
    source = part.work.source
    if part.done is None:  # never finished: every worker that took it died, or it found none
        report = source.report(0, None)
        report.status = "failed" if part.errors else "stopped"  # stopped: Ctrl-C came before it started
        report.errors = [*report.errors, *part.errors]
        return report
    report = part.done.summary.sources[0]
    report.errors = [*part.errors, *report.errors]
    report.parts = [part.report]
    return report


def segmented_report(source: Source, sink: Sink | None, parts: list[Part]) -> SourceReport:
    """One report for a source done in segments: counts summed, parts listed in order, the joined output."""
    reports = [source_report(p) for p in parts]
    statuses = {r.status for r in reports}
    status = "ok" if statuses == {"ok"} else "failed" if "failed" in statuses else "stopped"
    video = isinstance(sink, VideoSink)
    kept = sink.kept if video else reports[0].output
    if status == "ok" and video and kept is None:
        status = "failed"  # the join failed: the run's error says why
    return SourceReport(source.label, source.spec, source.kind, status, sum(r.frames_in for r in reports),
                        sum(r.decoded for r in reports), sum(r.undecodable for r in reports), 0, 0,
                        [e for r in reports for e in r.errors], sum(r.frames_out for r in reports),
                        None if kept is None else str(kept), sink.audio if video else None,
                        [r.parts[0] for r in reports if r.parts])


def run_summary(sources: list[Source], sinks: list[Sink | None], parts: list[Part], batch: int, seconds: float,
                interrupted: bool) -> RunSummary:
    """The run's summary: per source, and in all; `seconds` counted from the workers ready (as a single-process
    run counts from its model loaded), so `fps` is the cluster's throughput."""
    reports = []
    for i, (source, sink) in enumerate(zip(sources, sinks) if parts else []):
        mine = [p for p in parts if p.work.source_index == i]
        reports.append(segmented_report(source, sink, mine) if mine[0].work.segment is not None
                       else source_report(mine[0]))
    summaries = [p.done.summary for p in parts if p.done]
    frames_in = sum(r.frames_in for r in reports)
    frames_out = sum(r.frames_out for r in reports)
    undecodable = sum(r.undecodable for r in reports)
    return RunSummary(
        backend=summaries[0].backend if summaries else None,
        precision=summaries[0].precision if summaries else None, batch=batch,
        frames_in=frames_in, frames_out=frames_out, undecodable=undecodable,
        dropped_frames=frames_in - undecodable - frames_out, seconds=round(seconds, 3),
        fps=round(frames_out / seconds, 3) if seconds > 0 else 0.0,
        latency_ms=None,  # percentiles of separate workers do not combine; each part's time is in `sources`
        inference=merge_inference(summaries), sources=reports, interrupted=interrupted)


def merge_inference(summaries: list[RunSummary]) -> InferenceStats | None:
    """Batches summed; per-stage milliseconds per frame weighted by each worker's frames."""
    stats = [s.inference for s in summaries if s.inference and s.inference.batches]
    if not stats:
        return None
    batches = sum(s.batches for s in stats)
    frames = sum(s.batches * s.mean_batch for s in stats)
    total = sum((_scaled(s.ms_per_frame, s.batches * s.mean_batch) for s in stats), Timings())
    return InferenceStats(batches, round(frames / batches, 2), total.per(round(frames)))


def _scaled(timings: Timings, count: float) -> Timings:
    return Timings(timings.h2d_ms * count, timings.compute_ms * count, timings.d2h_ms * count,
                   timings.total_ms * count)
