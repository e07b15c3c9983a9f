"""Where frames come from: image files, folders and globs, video files, cameras, network streams, list files.

Each source decodes on its own (PyAV for files and streams, OpenCV for images and cameras)
and keeps its own account: frames delivered, undecodable frames, retries, errors, status.
A network stream or camera that drops or stalls is reopened with exponential back-off, each retry
logged (one that never opened fails after one quick retry); a file
served over HTTP restarts from its first frame on reconnecting, and the frames already
delivered are skipped, so none is delivered twice.
"""
from __future__ import annotations

import glob
import logging
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import DehazeError
from .imagefile import IMAGE_SUFFIXES, read_image
from .summary import SourceReport

log = logging.getLogger("runtime")

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m"}
MAX_ERRORS = 20
QUICK_RETRY_S = 0.5  # the one retry of a source that never opened: a glitch, not an outage
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass
class Decoded:
    image: np.ndarray   # as decoded: BGR, gray, BGRA or 16-bit (converted downstream)
    time: float | None  # presentation time in seconds, when the container gives one
    name: str | None    # output file stem for image sources


@dataclass
class SourceStats:
    frames: int = 0        # delivered downstream
    undecodable: int = 0   # read but not decodable
    replayed: int = 0      # seen again after a reconnect and skipped
    retries: int = 0
    status: str = "pending"  # ok | stopped | failed | dropped
    errors: list[str] = field(default_factory=list)  # the latest MAX_ERRORS

    def note(self, error: str) -> None:
        self.errors = [*self.errors[-(MAX_ERRORS - 1):], error]  # a stream flapping for days stays bounded

    def fail(self, status: str, error: str) -> None:
        self.status = status
        self.note(error)


class Source:
    kind = "source"
    fps: Fraction | None = None      # frame rate for a video output
    expected: int | None = None      # frame count when known (progress bar)
    audio: str | None = None         # a file whose audio track a video output copies
    start_time: float = 0.0          # container start, seconds: outputs start at 0

    def __init__(self, spec: str, label: str) -> None:
        self.spec, self.label = spec, label
        self.stats = SourceStats()

    def frames(self, stop: threading.Event) -> Iterator[Decoded]:
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The files this source reads: outputs must never replace them."""
        return []

    def report(self, frames_out: int, sink) -> SourceReport:
        """What happened to this source; `sink` (None: nothing written) for the output as kept and its audio."""
        s = self.stats
        kept = sink.kept if sink is not None else None
        return SourceReport(self.label, self.spec, self.kind, s.status, s.frames + s.undecodable, s.frames,
                            s.undecodable, s.replayed, s.retries, list(s.errors), frames_out,
                            None if kept is None else str(kept), sink.audio if sink is not None else None)


class ImageFiles(Source):
    kind = "images"

    def __init__(self, spec: str, label: str, paths: list[Path]) -> None:
        super().__init__(spec, label)
        self.paths = paths
        self.expected = len(paths)
        stems = [p.stem for p in paths]
        # Output names: the file stem, made unique when two inputs share one (a.jpg, a.png).
        self.names = [s if stems.count(s) == 1 else f"{s}_{p.suffix[1:]}" for s, p in zip(stems, paths)]

    def files(self) -> list[Path]:
        return list(self.paths)

    def frames(self, stop: threading.Event) -> Iterator[Decoded]:
        for path, name in zip(self.paths, self.names):
            if stop.is_set():
                self.stats.status = "stopped"
                return
            image = read_image(path)
            if image is None or image.size == 0:
                self.stats.undecodable += 1
                self.stats.note(f"{path}: not a readable image")
                continue
            self.stats.frames += 1
            yield Decoded(image, None, name)
        if self.stats.frames == 0:
            self.stats.status = "failed"
        elif self.stats.status == "pending":
            self.stats.status = "ok"


def _decode(container, stats: SourceStats, live: bool) -> Iterator[Decoded]:
    """Video frames of a PyAV container; a packet that yields no frame counts as undecodable.

    A file that breaks off (truncated) has its decoder flushed, so the frames it held are
    delivered, then the error is raised. A dropped live connection is not flushed and its
    cut-off packets are not counted: a served file is decoded again after the reconnect
    (and counted then); what a live stream lost while down cannot be counted."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    packets = produced = 0

    def frames(decoded) -> Iterator[Decoded]:
        nonlocal produced
        for frame in decoded:
            produced += 1
            seconds = frame.time  # NaN when the frame has no timestamp
            if seconds is not None and math.isnan(seconds):
                seconds = None
            yield Decoded(frame.to_ndarray(format="bgr24"), seconds, None)

    try:
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                continue
            yield from frames(decoded)
    except (av.FFmpegError, OSError):
        if live:
            raise
        try:
            yield from frames(stream.codec_context.decode(None))
        except (av.FFmpegError, OSError):
            pass
        stats.undecodable += max(0, packets - produced)
        raise
    stats.undecodable += max(0, packets - produced)


def _open_av(spec: str, timeout: float | None = None):
    options = {"rtsp_transport": "tcp"} if spec.startswith(("rtsp://", "rtsps://")) else {}
    container = av.open(spec, options=options, timeout=timeout)
    if not container.streams.video:
        container.close()
        raise DehazeError(f"{spec}: no video stream")
    return container


def _describe(container, source: Source) -> None:
    stream = container.streams.video[0]
    source.fps = stream.average_rate or stream.guessed_rate
    source.expected = stream.frames or None
    source.start_time = (container.start_time or 0) / av.time_base


class VideoFile(Source):
    kind = "video"

    def __init__(self, spec: str, label: str) -> None:
        super().__init__(spec, label)
        try:
            with _open_av(spec) as container:
                _describe(container, self)
                self.audio = spec if container.streams.audio else None
        except (av.FFmpegError, OSError, DehazeError) as exc:
            self.stats.fail("failed", f"cannot open: {exc}")

    def files(self) -> list[Path]:
        return [Path(self.spec)]

    def frames(self, stop: threading.Event) -> Iterator[Decoded]:
        if self.stats.status == "failed":
            return
        try:
            with _open_av(self.spec) as container:
                for item in _decode(container, self.stats, live=False):
                    self.stats.frames += 1
                    yield item
                    if stop.is_set():
                        self.stats.status = "stopped"
                        return
        except (av.FFmpegError, OSError, DehazeError) as exc:
            self.stats.note(f"decoding stopped: {exc}")  # a truncated file: keep what was decoded
        if self.stats.frames:
            self.stats.status = "ok"
        elif self.stats.undecodable:
            self.stats.fail("failed", f"{self.spec}: none of its {self.stats.undecodable} frame(s) could be decoded")
        else:  # a header without frames, or a stream cut before its first one
            self.stats.fail("failed", f"{self.spec}: the file holds no video frames")


class _Reconnecting(Source):
    """A live source reopened with exponential back-off when it drops or stalls, each retry announced.
    One that never opened is down or misnamed: after one quick retry it fails (the back-off is for outages)."""

    def __init__(self, spec: str, label: str, retries: int, retry_delay: float, timeout: float) -> None:
        super().__init__(spec, label)
        self.retries, self.retry_delay, self.timeout = retries, retry_delay, timeout
        self.opened = False  # set by _attempt once a connection is made
        self.name = spec     # how messages name it

    def _attempt(self, stop: threading.Event) -> Iterator[Decoded]:
        raise NotImplementedError

    def frames(self, stop: threading.Event) -> Iterator[Decoded]:
        failures = 0
        while not stop.is_set():
            delivered = self.stats.frames
            try:
                yield from self._attempt(stop)
                self.stats.status = "stopped" if stop.is_set() else "ok"
                return
            except (av.FFmpegError, OSError, DehazeError) as exc:
                failures = 1 if self.stats.frames > delivered else failures + 1
                self.stats.note(str(exc))
                if not self.opened:
                    if failures > min(self.retries, 1):
                        self.stats.status = "failed"
                        log.error("%s: %s; never opened: %s", self.name, _reason(exc),
                                  "gave up after one quick retry" if self.stats.retries else "not retried (--retries 0)")
                        return
                    delay = QUICK_RETRY_S
                elif failures > self.retries:
                    self.stats.status = "dropped"
                    log.error("%s: dropped after %d retries (%s)", self.name, self.retries, _reason(exc))
                    return
                else:
                    delay = min(self.retry_delay * 2 ** (failures - 1), 30.0)
                    log.warning("%s: retry %d/%d in %g s (%s)", self.name, failures, self.retries, delay, _reason(exc))
                self.stats.retries += 1
                stop.wait(delay)
        self.stats.status = "stopped"


def _reason(exc: BaseException) -> str:
    """The error without the source's name, which the line starts with already."""
    return getattr(exc, "strerror", None) or str(exc).split(": ", 1)[-1]


class NetworkStream(_Reconnecting):
    kind = "stream"
    first_time: float | None = None  # of the first frame of the first connection
    last_time: float | None = None   # of the last frame delivered

    def _attempt(self, stop: threading.Event) -> Iterator[Decoded]:
        with _open_av(self.spec, timeout=self.timeout) as container:
            self.opened = True
            _describe(container, self)
            replay: bool | None = None
            for item in _decode(container, self.stats, live=True):
                if item.time is not None:
                    if replay is None:
                        # A file served over HTTP starts again from its first frame after a reconnect:
                        # skip what was delivered. Live streams continue (or restart their clock): keep all.
                        replay = (self.spec.lower().startswith(("http://", "https://"))
                                  and self.last_time is not None and item.time == self.first_time)
                    if replay and item.time <= self.last_time:
                        self.stats.replayed += 1
                        continue
                    self.first_time = item.time if self.first_time is None else self.first_time
                    self.last_time = item.time
                self.stats.frames += 1
                yield item
                if stop.is_set():
                    return


class Camera(_Reconnecting):
    kind = "camera"

    def __init__(self, spec: str, label: str, retries: int, retry_delay: float, timeout: float) -> None:
        super().__init__(spec, label, retries, retry_delay, timeout)
        self.name = f"camera {spec}"

    def _attempt(self, stop: threading.Event) -> Iterator[Decoded]:
        with _quiet_opencv():  # a missing camera makes OpenCV's back-ends warn one after the other
            capture = cv2.VideoCapture(int(self.spec))
        try:
            if not capture.isOpened():
                raise DehazeError(f"camera {self.spec}: no such camera, or it is in use")
            self.opened = True
            rate = capture.get(cv2.CAP_PROP_FPS)
            self.fps = Fraction(rate).limit_denominator(1001) if rate > 0 else Fraction(30)
            while not stop.is_set():
                ok, image = capture.read()
                if not ok:
                    raise DehazeError(f"camera {self.spec}: no frame")
                self.stats.frames += 1
                yield Decoded(image, None, None)
        finally:
            capture.release()


@contextmanager
def _quiet_opencv():
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _label(spec: str) -> str:
    text = re.sub(r"^\w+://", "", spec.rstrip("/"))
    text = Path(text).stem if "://" not in spec else text
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "source"


def _from_paths(spec: str, paths: list[Path], label: str) -> list[Source]:
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    sources: list[Source] = [ImageFiles(spec, label, images)] if images else []
    return sources + [VideoFile(str(p), _label(str(p))) for p in videos]


def parse_source(spec: str, retries: int = 5, retry_delay: float = 1.0, timeout: float = 10.0) -> list[Source]:
    """The sources one --source names; a .txt list file names several, one per line (# comments)."""
    if spec.isdigit():
        return [Camera(spec, f"camera{spec}", retries, retry_delay, timeout)]
    if spec.lower().startswith(STREAM_SCHEMES):
        return [NetworkStream(spec, _label(spec), retries, retry_delay, timeout)]
    path = Path(spec)
    if path.suffix.lower() == ".txt" and path.is_file():
        sources: list[Source] = []
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                entry = line if line.isdigit() or "://" in line else str(path.parent / line)
                sources += parse_source(entry, retries, retry_delay, timeout)
        if not sources:
            raise DehazeError(f"{spec}: the list names no sources")
        return sources
    if path.is_dir():
        found = _from_paths(spec, sorted(p for p in path.iterdir() if p.is_file()), path.name or "images")
        if not found:
            raise DehazeError(f"{spec}: no images or videos in this folder")
        return found
    if glob.has_magic(spec):
        found = _from_paths(spec, sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file()), _label(spec))
        if not found:
            raise DehazeError(f"{spec}: matches no images or videos")
        return found
    if not path.is_file():
        raise DehazeError(f"{spec}: no such file, folder, camera or URL")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [ImageFiles(spec, path.stem, [path])]
    return [VideoFile(spec, path.stem)]


def open_sources(specs: list[str], retries: int = 5, retry_delay: float = 1.0, timeout: float = 10.0) -> list[Source]:
    """Every source named, with labels made unique (they name the outputs)."""
    sources = [s for spec in specs for s in parse_source(spec, retries, retry_delay, timeout)]
    seen: dict[str, int] = {}
    for source in sources:
        count = seen.get(source.label, 0)
        seen[source.label] = count + 1
        if count:
            source.label = f"{source.label}_{count + 1}"
    return sources
