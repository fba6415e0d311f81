"""Reading media with PyAV: the inputs before anything is encoded, the written file afterwards.

Every reader opens the container without decoding frames where the container knows the answer (stream
durations and frame counts); only a file that does not say how long it is gets its packets counted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


class NotMedia(Exception):
    """The file does not open as media, or lacks the stream asked for; the message says which."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float


@dataclass(frozen=True)
class OutputInfo:
    video_codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    duration_s: float
    audio_codec: str | None
    audio_duration_s: float | None
    subtitle_track: bool


def _open(path: Path):
    import av

    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise NotMedia(f"is not a readable media file ({getattr(exc, 'strerror', None) or exc})") from None


def _first_stream(container, kind: str):
    """The first `video` or `audio` stream, or NotMedia listing the kinds the file has."""
    streams = container.streams.video if kind == "video" else container.streams.audio
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NotMedia(f"has no {kind} stream (streams: {', '.join(kinds)})")
    return streams[0]


def _stream_duration_s(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _packet_span_s(container, stream) -> float:
    """The stream's length from its packets' timestamps (no decoding), for containers without a duration."""
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def probe_video(path: Path) -> VideoInfo:
    """Size, frame rate and duration of the first video stream, or NotMedia."""
    with _open(path) as container:
        stream = _first_stream(container, "video")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = _stream_duration_s(stream, container)
        if duration is None:
            duration = _packet_span_s(container, stream)
        if not stream.width or not stream.height or duration <= 0:
            raise NotMedia("has a video stream without a size or a duration")
        return VideoInfo(stream.width, stream.height, float(rate) if rate else 0.0, duration)


def probe_audio_duration_s(path: Path) -> float:
    """Duration of the first audio stream, or NotMedia."""
    with _open(path) as container:
        stream = _first_stream(container, "audio")
        duration = _stream_duration_s(stream, container)
        return duration if duration is not None else _packet_span_s(container, stream)


def probe_output(path: Path) -> OutputInfo:
    """What the written file really holds (codecs, frame count, stream durations)."""
    with _open(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return OutputInfo(
            video_codec=video.codec_context.name, pix_fmt=video.codec_context.pix_fmt or "",
            width=video.width, height=video.height, frames=video.frames,
            duration_s=_stream_duration_s(video, container) or 0.0,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_duration_s=_stream_duration_s(audio, container) if audio is not None else None,
            subtitle_track=bool(container.streams.subtitles))


def moov_before_mdat(path: Path) -> bool:
    """True when the top-level `moov` box comes before `mdat` (`+faststart`: players start before the end)."""
    with path.open("rb") as handle:
        while header := handle.read(8):
            if len(header) < 8:
                return False
            size, kind = struct.unpack(">I4s", header)
            if kind in (b"moov", b"mdat"):
                return kind == b"moov"
            if size == 1:  # 64-bit size follows the type
                size = struct.unpack(">Q", handle.read(8))[0] - 8
            elif size == 0:  # the box runs to the end of the file
                return False
            handle.seek(size - 8, 1)
    return False
