"""Copy a source's audio track into a dehazed video: a remux (no re-encoding) with PyAV."""
from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path

import av


def _timed(packets, shift: float) -> Iterator[tuple[float, object]]:
    """(time in seconds, packet) for muxable packets, timestamps moved `shift` seconds earlier.
    Matroska leaves dts unset on some packets: their pts orders them."""
    for packet in packets:
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is None:  # the demuxer's final empty packet
            continue
        ticks = round(shift / packet.time_base)
        if packet.dts is not None:
            packet.dts -= ticks
        if packet.pts is not None:
            packet.pts -= ticks
        yield float((stamp - ticks) * packet.time_base), packet


def mux_audio(video_only: Path, audio_source: str, out: Path, start: float) -> str | None:
    """Write `out` = video of `video_only` + first audio track of `audio_source` (its timestamps
    rebased by the source's start time, cut at the video's end); None, or why it failed."""
    try:
        with av.open(str(video_only)) as vin, av.open(audio_source) as ain, av.open(str(out), "w") as dst:
            v_in, a_in = vin.streams.video[0], ain.streams.audio[0]
            v_out, a_out = dst.add_stream_from_template(v_in), dst.add_stream_from_template(a_in)
            end = vin.duration / av.time_base if vin.duration else float("inf")
            merged = heapq.merge(_timed(vin.demux(v_in), 0.0), _timed(ain.demux(a_in), start), key=lambda tp: tp[0])
            for seconds, packet in merged:
                if packet.stream.type == "audio":
                    if seconds > end:
                        continue
                    packet.stream = a_out
                else:
                    packet.stream = v_out
                dst.mux(packet)
    except (av.FFmpegError, OSError, ValueError) as exc:
        out.unlink(missing_ok=True)
        return str(exc)
    except BaseException:  # Ctrl-C: no half-muxed file left behind
        out.unlink(missing_ok=True)
        raise
    return None
