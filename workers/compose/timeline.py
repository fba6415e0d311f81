"""The output timeline: which frames each clip fills, how much is held or trimmed, where the audio leads.

Pure functions on numbers (no files, no ffmpeg), so their guarantees are easy to test:
- slot boundaries are rounded cumulatively, so the total frame count is exactly round(timeline_s x fps) and
  every boundary is a frame boundary (unless a slot is shorter than a frame: each clip shows one frame at
  least);
- a clip shorter than its slot is held (its last frame repeated), a longer one trimmed; never both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    index: int
    start_frame: int
    end_frame: int  # exclusive
    source_duration_s: float
    fps: int

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps

    @property
    def held_s(self) -> float:
        return max(0.0, self.end_s - self.start_s - self.source_duration_s)

    @property
    def trimmed_s(self) -> float:
        return max(0.0, self.source_duration_s - (self.end_s - self.start_s))


@dataclass(frozen=True)
class Timeline:
    slots: list[Slot]
    fps: int
    extended_s: float | None  # how far the audio extended the last slot

    @property
    def frames(self) -> int:
        return self.slots[-1].end_frame

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


def audio_too_short(audio_s: float, video_s: float, fps: int) -> bool:
    """Shorter than the video by more than one frame (a frame's difference is rounding, not a missing line)."""
    return audio_s < video_s - 1.0 / fps


def plan_timeline(source_durations_s: list[float], durations_s: list[float] | None, fps: int,
                  audio_s: float | None = None) -> Timeline:
    """Slots for the clips, in order: `durations_s` when given, else each clip's own duration; a longer audio
    extends the last slot to its end. The caller has refused an audio that is too short."""
    wanted = list(durations_s) if durations_s is not None else list(source_durations_s)
    if len(wanted) != len(source_durations_s):
        raise ValueError(f"{len(wanted)} slot durations for {len(source_durations_s)} clips")
    timeline_s = math.fsum(wanted)
    extended_s = None
    if audio_s is not None and audio_s > timeline_s:
        extended_s = audio_s - timeline_s
        wanted[-1] += extended_s
    slots, start = [], 0
    for index, source_s in enumerate(source_durations_s):
        elapsed_s = math.fsum(wanted[:index + 1])  # exact sums: the last boundary is round(fsum(all) x fps)
        end = max(round(elapsed_s * fps), start + 1)  # every clip shows at least one frame
        slots.append(Slot(index, start, end, source_s, fps))
        start = end
    return Timeline(slots, fps, extended_s)
