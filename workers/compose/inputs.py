"""Every check the schema cannot make, all reported in one answer: clips, sizes, slots, audio, captions.

Runs before anything is encoded (in `check_inputs`) and again at the start of `run`, which needs the probed
facts; probing reads container headers only, a few milliseconds per file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.runtime import FieldErrors, input_file

from .captions import BadCaptions, load_captions
from .contract import Args
from .probe import NotMedia, VideoInfo, probe_audio_duration_s, probe_video
from .timeline import audio_too_short, plan_timeline


@dataclass(frozen=True)
class Inputs:
    clips: list[Path]
    videos: list[VideoInfo]
    audio: Path | None
    audio_s: float | None
    subtitles: Path | None
    captions: Any  # pysubs2.SSAFile, or None


def _probe_clips(args: Args, problems: FieldErrors) -> tuple[list[Path], list[VideoInfo]]:
    clips, videos = [], []
    for index, value in enumerate(args.clips):
        field = f"$.clips[{index}]"
        path = problems.attempt(input_file, value, field)
        if path is None:
            continue
        try:
            videos.append(probe_video(path))
            clips.append(path)
        except NotMedia as exc:
            problems.add(field, f"clips[{index}] {value!r} {exc}", "bad_file")
    return clips, videos


def _check_sizes(args: Args, videos: list[VideoInfo], problems: FieldErrors) -> None:
    """Without `fit` there is no resize policy: one size for all clips, with the output's aspect ratio."""
    if args.fit is not None:
        return
    sizes = {(v.width, v.height) for v in videos}
    if len(sizes) > 1:
        listed = ", ".join(f"clips[{i}] {v.width}x{v.height}" for i, v in enumerate(videos))
        problems.add("$.fit", f"the clips have different sizes ({listed}) and fit is null (no resize policy); "
                     "set fit to 'cover', 'contain' or 'stretch'", "size_mismatch")
    elif sizes:
        (width, height), = sizes
        if width * args.height != height * args.width:
            problems.add("$.fit", f"the clips are {width}x{height}, whose aspect differs from the output's "
                         f"{args.width}x{args.height}, and fit is null (no resize policy); set fit to 'cover', "
                         "'contain' or 'stretch'", "aspect_mismatch")


def _check_durations(args: Args, problems: FieldErrors) -> None:
    if args.durations_s is not None and len(args.durations_s) != len(args.clips):
        problems.add("$.durations_s", f"durations_s has {len(args.durations_s)} entries but clips has "
                     f"{len(args.clips)}; give one slot duration per clip", "length_mismatch")


def _read_optional(value: str | None, field: str, read: Callable[[Path], Any], failure: type[Exception],
                   problems: FieldErrors) -> tuple[Path | None, Any]:
    """(path, what `read` made of it) for an optional input file; (None, None) when absent or bad (recorded)."""
    if value is None:
        return None, None
    path = problems.attempt(input_file, value, field)
    if path is None:
        return None, None
    try:
        return path, read(path)
    except failure as exc:
        problems.add(f"$.{field}", f"{field} {value!r} {exc}", "bad_file")
        return None, None


def _check_audio_length(args: Args, videos: list[VideoInfo], audio_s: float, problems: FieldErrors) -> None:
    video_s = plan_timeline([v.duration_s for v in videos], args.durations_s, args.fps).duration_s
    if audio_too_short(audio_s, video_s, args.fps):
        problems.add("$.audio_path", f"audio_path {args.audio_path!r} lasts {audio_s:.3f} s, shorter than the "
                     f"video timeline ({video_s:.3f} s) by more than one frame; shorten durations_s or the clips, "
                     "or pass the full narration", "audio_too_short")


def inspect_inputs(args: Args, worker_name: str) -> Inputs:
    """The probed inputs, or InvalidInput listing every problem at once (each with its JSON path)."""
    problems = FieldErrors()
    clips, videos = _probe_clips(args, problems)
    _check_durations(args, problems)
    all_clips_read = len(clips) == len(args.clips)
    if all_clips_read:
        _check_sizes(args, videos, problems)
    audio, audio_s = _read_optional(args.audio_path, "audio_path", probe_audio_duration_s, NotMedia, problems)
    if audio_s is not None and all_clips_read and not problems.items:
        _check_audio_length(args, videos, audio_s, problems)
    subtitles, captions = _read_optional(args.subtitles_path, "subtitles_path", load_captions, BadCaptions, problems)
    problems.raise_if_any(f"invalid input for worker '{worker_name}'")
    return Inputs(clips, videos, audio, audio_s, subtitles, captions)
