"""Where dehazed frames go: image folders, one image, video files (with the source's audio), raw frames
on stdout, a live window. Files are created on the first frame, so a run that fails early leaves none."""
from __future__ import annotations

import logging
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .audio import mux_audio
from .errors import DehazeError, OutputError
from .imagefile import IMAGE_SUFFIXES, write_image
from .sources import Source

log = logging.getLogger("runtime")

# Codec per container; H.264 and MPEG-4 want even sizes in yuv420p.
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".m4v": "libx264", ".ts": "libx264",
                ".avi": "mpeg4", ".webm": "libvpx-vp9"}
LOSSLESS_CODECS = ("libx264", "libvpx-vp9")
DEFAULT_FPS = Fraction(25)


class Sink:
    path = "-"
    kept: Path | str | None = None  # where what was written lies, once there is something
    audio: str | None = None        # a video's audio: "copied", "dropped: <why>"; None without any to copy

    def write(self, image: np.ndarray, time: float | None, name: str | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        """The run was aborted at an arbitrary point (a second Ctrl-C): keep what can be kept, finish nothing."""


class ImageFolder(Sink):
    """One PNG per frame: image inputs keep their names, video frames are numbered."""

    def __init__(self, folder: Path, source: Source) -> None:
        self.folder, self.path, self.count = folder, str(folder), 0
        # The first files this sink will write, to find what it would replace before any work starts.
        names = getattr(source, "names", None) or [f"{0:06d}"]
        self.targets = [folder / f"{name}.png" for name in names]

    def write(self, image: np.ndarray, time: float | None, name: str | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{name or f'{self.count:06d}'}.png"
        write_image(target, image)
        self.count += 1
        self.kept = self.folder


class ImageFile(Sink):
    def __init__(self, path: Path) -> None:
        self.file, self.path = path, str(path)
        self.targets = [path]

    def write(self, image: np.ndarray, time: float | None, name: str | None) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_image(self.file, image)
        self.kept = self.file


class VideoFile(Sink):
    """Frames encoded at the source's rate with its timestamps (gaps kept), audio copied afterwards.
    The video grows as NAME.partial.EXT and is renamed to NAME.EXT once complete, so a failed or aborted
    run never leaves a broken file under the final name."""

    def __init__(self, path: Path, source: Source, fps: float | None, lossless: bool = False) -> None:
        self.file, self.path, self.source = path, str(path), source
        self.targets = [path]
        self.partial = path.with_name(f"{path.stem}.partial{path.suffix}")
        self.fps = Fraction(fps).limit_denominator(1001) if fps else None
        self.lossless = lossless
        self._container = None
        self._next_pts = 0

    def _open(self, height: int, width: int) -> None:
        self.fps = self.fps or self.source.fps or DEFAULT_FPS
        self.file.parent.mkdir(parents=True, exist_ok=True)
        codec = VIDEO_CODECS[self.file.suffix.lower()]
        self._container = av.open(str(self.partial), "w")
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":  # qp 0: the yuv420p frames exactly (High 4:4:4 Predictive profile)
            self._stream.options = {"qp": "0", "preset": "veryfast"} if self.lossless else {"crf": "18",
                                                                                           "preset": "veryfast"}
        elif codec == "libvpx-vp9" and self.lossless:
            self._stream.options = {"lossless": "1"}
        self._size = (height, width)

    def write(self, image: np.ndarray, time: float | None, name: str | None) -> None:
        try:
            self._encode(image, time)
        except (av.FFmpegError, OSError) as exc:
            self._discard()
            raise OutputError(f"{self.path}: cannot write the video ({_reason(exc)}); nothing is left under "
                              "that name") from None

    def _encode(self, image: np.ndarray, time: float | None) -> None:
        if self._container is None:
            self._open(*image.shape[:2])
        if image.shape[:2] != self._size:
            log.warning("%s: frame %dx%d resized to the video's %dx%d", self.path, image.shape[1], image.shape[0],
                        self._size[1], self._size[0])
            image = cv2.resize(image, self._size[::-1], interpolation=cv2.INTER_AREA)
        pad = ((0, self._size[0] % 2), (0, self._size[1] % 2), (0, 0))
        if any(p[1] for p in pad):
            image = np.pad(image, pad, mode="edge")
        pts = self._next_pts if time is None else max(self._next_pts, round((time - self.source.start_time) * self.fps))
        self._next_pts = pts + 1
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder, copy the source's audio in, and give the video its name."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except (av.FFmpegError, OSError) as exc:
            self._discard()
            raise OutputError(f"{self.path}: cannot finish the video ({_reason(exc)}); nothing is left under "
                              "that name") from None
        self._container = None
        self.publish()

    def publish(self) -> None:
        """The video is complete as NAME.partial.EXT: copy the source's audio in and give it its name (also
        after runtime.segments joined a cluster's segments into it)."""
        self.kept = self.partial  # complete video frames from here on, should the rest be interrupted
        if self.source.audio:
            muxed = self.file.with_name(f"{self.file.stem}.partial-audio{self.file.suffix}")
            why = mux_audio(self.partial, self.source.audio, muxed, self.source.start_time)
            self.audio = f"dropped: {why}" if why else "copied"
            if why:
                log.warning("%s: audio not copied (%s); video only", self.path, why)
            else:
                os.replace(muxed, self.partial)
        os.replace(self.partial, self.file)
        self.kept = self.file

    def abandon(self) -> None:
        """Close what was written (a packet may be missing where the abort struck) and leave it as
        NAME.partial.EXT; if even that fails, remove it."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.close()
            self.kept = self.partial
        except (av.FFmpegError, OSError):
            self.partial.unlink(missing_ok=True)

    def _discard(self) -> None:
        """After a failed write: no encoder flush (writing more into a failed muxer is where libav can
        crash), and the unfinishable file goes."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass
        self.partial.unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class RawStdout(Sink):
    """Raw bgr24 frames for a pipe, e.g. into `ffmpeg -f rawvideo -pix_fmt bgr24 -s WxH -i -`."""

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None

    def write(self, image: np.ndarray, time: float | None, name: str | None) -> None:
        if image.shape != self._shape:
            self._shape = image.shape
            log.warning("stdout: raw bgr24 frames of %dx%d", image.shape[1], image.shape[0])
        try:
            sys.stdout.buffer.write(np.ascontiguousarray(image).data)
            self.kept = "-"
        except BrokenPipeError:
            raise DehazeError("stdout was closed by the reading process") from None

    def close(self) -> None:
        try:
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            pass


class Window:
    """A live view per source; q or Esc stops the run."""

    def __init__(self) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DehazeError("--show needs a display and none is set (DISPLAY / WAYLAND_DISPLAY); "
                              "write to --output instead")
        try:
            cv2.namedWindow("kanet", cv2.WINDOW_NORMAL)
            cv2.destroyWindow("kanet")
        except cv2.error:
            raise DehazeError("--show: this OpenCV build has no window support (opencv-python-headless); "
                              "install opencv-python for a live window") from None

    def show(self, label: str, image: np.ndarray) -> bool:
        """Display a frame; False once the user asked to stop."""
        cv2.imshow(f"kanet {label}", image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyAllWindows()


def sinks_for(output: str, sources: list[Source], fps: float | None = None, lossless: bool = False) -> list[Sink]:
    """One sink per source: '-' raw frames, a video file per source (name-label.ext when several),
    one image file for one input image, else an image folder (a subfolder per source when several):
    an existing folder, or a new one without an extension (x.gif is a mistake, not a folder to make).
    lossless: videos keep their yuv420p frames exactly (H.264 qp 0, VP9 lossless; not MPEG-4 in .avi)."""
    if output == "-":
        if len(sources) != 1:
            raise DehazeError("raw frames on stdout take exactly one source")
        return [RawStdout()]
    path = Path(output)
    suffix = path.suffix.lower()
    several = len(sources) > 1
    if lossless and suffix not in VIDEO_CODECS:
        raise DehazeError(f"{output}: --lossless applies to video outputs ({', '.join(VIDEO_CODECS)}); images are "
                          "PNG, lossless already")
    if suffix in VIDEO_CODECS:
        if lossless and VIDEO_CODECS[suffix] not in LOSSLESS_CODECS:
            lossless_ok = ", ".join(s for s, c in VIDEO_CODECS.items() if c in LOSSLESS_CODECS)
            raise DehazeError(f"{output}: --lossless: {suffix} is written with {VIDEO_CODECS[suffix]}, which has no "
                              f"lossless mode; give {lossless_ok}")
        return [VideoFile(path.with_name(f"{path.stem}-{s.label}{path.suffix}") if several else path, s, fps,
                          lossless) for s in sources]
    if suffix in IMAGE_SUFFIXES:
        if several or sources[0].kind != "images" or sources[0].expected != 1:
            raise DehazeError(f"{output}: an image file holds one dehazed image; give a folder for several frames")
        return [ImageFile(path)]
    kinds = (f"a video ({', '.join(VIDEO_CODECS)}), an image ({', '.join(sorted(IMAGE_SUFFIXES))}), '-' "
             "or a folder")
    if path.is_file():
        raise DehazeError(f"{output}: exists and is not a folder; outputs are {kinds}")
    if suffix and not path.is_dir():
        raise DehazeError(f"{output}: unknown output type {suffix!r}; outputs are {kinds} (a new folder's name "
                          "has no extension)")
    return [ImageFolder(path / s.label if several else path, s) for s in sources]


def _identity(path: Path) -> tuple:
    """What makes two paths one file: device and inode where it exists (hard links, symlinks, case-folding
    file systems), else the resolved path."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return (str(path.resolve()),)


def check_outputs(sinks: list[Sink], sources: list[Source], overwrite: bool = False) -> None:
    """Refuse, before any work starts, an output that is a source file, an image folder that holds a
    source's files, and (without `overwrite`) an output file that exists already."""
    inputs = {_identity(f) for s in sources for f in s.files()}
    input_folders = {_identity(f.parent) for s in sources for f in s.files()}
    for sink in sinks:
        if isinstance(sink, ImageFolder) and _identity(sink.folder) in input_folders:
            raise DehazeError(f"{sink.folder}: holds the source images; writing there would mix outputs "
                              f"with (or replace) the originals: choose another --output")
        for target in getattr(sink, "targets", []):
            if _identity(target) in inputs:
                raise DehazeError(f"{target}: is a source of this run and would be overwritten: choose another "
                                  f"--output (--overwrite never replaces a source)")
            if target.exists() and not overwrite:
                raise DehazeError(f"{target}: exists; give --overwrite to replace it, or another --output")
