"""A long video file in time segments, so one file keeps a whole cluster busy (`kanet run --cluster`).

Cuts fall on keyframes, found from the packets alone (nothing is decoded). A segment is decoded from its
keyframe and trimmed to its presentation times exactly: [start, end) in the stream's own pts, so no frame
is dropped, repeated or reordered at a boundary (frames an open GOP shows before its keyframe belong to the
segment before, which decodes on past its end until a frame reaches it). Each segment is encoded to its own
file; the files' packets are then joined in order into the output, checked (frame count, times increasing
across every boundary), and the source's audio is copied in as for any video output.
"""
from __future__ import annotations

import bisect
import math
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import OutputError
from .sinks import ImageFolder, Sink
from .sinks import VideoFile as VideoSink
from .sources import Decoded, Source, VideoFile, _open_av

MIN_SEGMENT_FRAMES = 25  # shorter segments cost more in seeks, encoder starts and part files than they gain


@dataclass(frozen=True)
class Span:
    index: int
    start: int | None    # first pts, in the stream's time base (None: from the file's start)
    end: int | None      # pts the segment stops before (None: to the file's end)
    first: int           # the segment's first frame's number in the whole file
    frames: int          # frames it holds (its video packets)
    start_s: float       # the same bounds in seconds, for the summary
    end_s: float | None


def segment_count(frames: int, total_frames: int, workers: int) -> int:
    """Pieces for a file of `frames` when the run holds `total_frames` in all: about two per worker over the
    whole run (so a worker that finishes early finds more), none shorter than MIN_SEGMENT_FRAMES."""
    target = max(MIN_SEGMENT_FRAMES, math.ceil(total_frames / (2 * workers)))
    return max(1, min(frames // MIN_SEGMENT_FRAMES, math.ceil(frames / target)))


@dataclass(frozen=True)
class PacketIndex:
    """A video file's frames as its packets tell them, read without decoding."""
    times: list[int]     # every frame's pts, sorted
    keys: list[int]      # keyframes' pts after the first frame, sorted: where a segment may start
    time_base: Fraction

    @classmethod
    def read(cls, path: str) -> PacketIndex | None:
        """None when the file cannot be cut (packets without timestamps, e.g. some AVI)."""
        with _open_av(path) as container:
            stream = container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
            base = stream.time_base
        if not packets or any(pts is None for pts, _ in packets):
            return None
        times = sorted(pts for pts, _ in packets)
        return cls(times, sorted({pts for pts, key in packets if key and pts > times[0]}), base)

    def spans(self, pieces: int) -> list[Span]:
        """Up to `pieces` spans of about equal frame counts, cut at the keyframes nearest an even split."""
        times, keys = self.times, self.keys
        cuts: list[int] = []
        for k in range(1, pieces):
            want = times[len(times) * k // pieces]  # the pts an even split would start at
            i = bisect.bisect_left(keys, want)
            near = min(keys[max(0, i - 1):i + 1], key=lambda pts: abs(pts - want), default=None)
            if near is not None and (not cuts or near > cuts[-1]):
                cuts.append(near)
        bounds = [None, *cuts, None]
        spans = []
        for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
            first = 0 if start is None else bisect.bisect_left(times, start)
            last = len(times) if end is None else bisect.bisect_left(times, end)
            spans.append(Span(index, start, end, first, last - first,
                              float((times[0] if start is None else start) * self.time_base),
                              None if end is None else float(end * self.time_base)))
        return spans


class Segment(Source):
    """One span of a video file, decoded from its keyframe and trimmed to it. No audio: the join copies the
    whole file's once."""
    kind = "video"

    def __init__(self, whole: VideoFile, span: Span) -> None:
        super().__init__(whole.spec, whole.label)
        self.fps, self.start_time, self.span = whole.fps, whole.start_time, span
        self.expected = span.frames

    def files(self) -> list[Path]:
        return [Path(self.spec)]

    def frames(self, stop: threading.Event) -> Iterator[Decoded]:
        start, end = self.span.start, self.span.end
        try:
            with _open_av(self.spec) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                if start is not None:
                    container.seek(start, stream=stream)  # to the keyframe at `start` (backward: at or before)
                for packet in container.demux(stream):
                    try:
                        decoded = packet.decode()
                    except av.error.InvalidDataError:
                        continue
                    for frame in decoded:
                        if frame.pts is None or (start is not None and frame.pts < start):
                            continue  # before the span: the segment before shows it
                        if end is not None and frame.pts >= end:
                            self._finish()
                            return
                        self.stats.frames += 1
                        yield Decoded(frame.to_ndarray(format="bgr24"), frame.time, None)
                        if stop.is_set():
                            self.stats.status = "stopped"
                            return
        except (av.FFmpegError, OSError) as exc:
            self.stats.note(f"decoding stopped: {exc}")
        self._finish()

    def _finish(self) -> None:
        """Every packet of the span is a frame: those not delivered were undecodable."""
        self.stats.undecodable = max(0, self.span.frames - self.stats.frames)
        if self.stats.frames:
            self.stats.status = "ok"
        else:
            self.stats.fail("failed", f"{self.spec}: none of the {self.span.frames} frame(s) of segment "
                                      f"{self.span.index} could be decoded")


def parts_folder(sink: VideoSink) -> Path:
    """Where the segments of `sink`'s video are written before the join: NAME.parts/ beside it."""
    return sink.file.with_name(f"{sink.file.stem}.parts")


def segment_sink(sink: Sink | None, segment: Segment) -> Sink | None:
    """The output of one segment: a part file for a video, the same folder (numbered from the segment's first
    frame) for PNGs."""
    if isinstance(sink, VideoSink):
        part = parts_folder(sink) / f"{segment.span.index:04d}{sink.file.suffix}"
        return VideoSink(part, segment, sink.fps, sink.lossless)
    if isinstance(sink, ImageFolder):
        images = ImageFolder(sink.folder, segment)
        images.count = segment.span.first
        return images
    return sink


def _stamps(part: Path) -> list[int]:
    """A part's video packets' pts, in decode order."""
    with av.open(str(part)) as src:
        return [packet.pts for packet in src.demux(src.streams.video[0]) if packet.size]


def join(sink: VideoSink, parts: list[Path], frames: int) -> None:
    """The parts' packets, in order, as `sink`'s video; then its audio and its name (VideoFile.publish).
    Refuses a join whose frame count is not `frames` or whose times do not increase across a boundary.

    Decode timestamps are given afresh over the whole video: the n-th packet gets the n-th smallest pts, less
    the encoder's reordering delay, which is what an encoder gives one stream; each part's own (Matroska stores
    none, and every part's encoder starts its own delay) would not increase across the cuts."""
    try:
        stamps = [_stamps(part) for part in parts]
        flat = [pts for part in stamps for pts in part]
        if any(pts is None for pts in flat):
            raise OutputError(f"{sink.path}: a segment's packets have no timestamps; nothing is left under that name")
        for before, after in zip(stamps, stamps[1:]):
            if before and after and min(after) <= max(before):
                raise OutputError(f"{sink.path}: a segment starts at or before the end of the one before; nothing is "
                                  "left under that name")
        ordered = sorted(flat)
        if len(flat) != frames or len(set(flat)) != len(flat):
            raise OutputError(f"{sink.path}: the segments hold {len(flat)} frames ({len(set(flat))} distinct times), "
                              f"the workers wrote {frames}; nothing is left under that name")
        delay = max(o - pts for o, pts in zip(ordered, flat))
        with av.open(str(sink.partial), "w") as out:
            target, n = None, 0
            for part in parts:
                with av.open(str(part)) as src:
                    stream = src.streams.video[0]
                    target = target or out.add_stream_from_template(stream)
                    for packet in src.demux(stream):
                        if not packet.size:
                            continue  # the demuxer's final empty packet
                        packet.dts = ordered[n] - delay
                        packet.stream = target
                        out.mux(packet)
                        n += 1
    except (av.FFmpegError, OSError) as exc:
        sink.partial.unlink(missing_ok=True)
        raise OutputError(f"{sink.path}: cannot join the segments ({exc}); nothing is left under that name") from None
    except OutputError:
        sink.partial.unlink(missing_ok=True)
        raise
    sink.publish()
    shutil.rmtree(parts[0].parent, ignore_errors=True)
