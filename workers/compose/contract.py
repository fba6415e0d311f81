"""Args and result of the compose worker. Pure pydantic: importable without PyAV or ffmpeg.

Every rule the model enforces is in the generated schema; what needs the files (clips decode as video, sizes
match without `fit`, `durations_s` has one entry per clip, the audio is long enough, the captions parse) is
checked by the worker before anything is encoded, and listed in `Args`' description and in docs/compose.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.contract import ERROR_MESSAGE_KEY, WorkerArgs, exact, file_name_field
from workers.contract.generation import Fit

Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
#: Bounds on one slot and on the clip count: far beyond a short-form video, small enough to keep a job bounded.
MAX_SLOT_S, MAX_CLIPS = 3600.0, 1000
#: A font family name that cannot break out of its field of an ASS style line (commas separate the fields).
FONT_NAME_PATTERN = exact(r"[^,{}\\\x00-\x20](?:[^,{}\\\x00-\x1f]*[^,{}\\\x00-\x20])?")
FIT_HELP = ("null: no resize policy (every clip has one size whose aspect is width:height; scaled uniformly); "
            "`cover`: scale to fill, centre-crop the overflow; `contain`: scale to fit, pad with black; "
            "`stretch`: ignore the aspect ratio.")


class Args(WorkerArgs):
    """Join clips in order at one size and frame rate, mux the narration as AAC, burn in captions (and add them
    as a soft subtitle track): one H.264 yuv420p `+faststart` mp4.

    Checked by the worker, beyond this schema: every clip exists under the allowed roots and has a video stream;
    without `fit` all clips have one size whose aspect equals width:height; `durations_s` has one entry per
    clip; the audio decodes and is not shorter than the video timeline by more than one frame; the subtitles
    file parses (SRT, VTT or ASS) and has at least one cue; `ffmpeg` is on PATH (else `model_unavailable`).
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"clips": ["clips/scene_01.mp4", "clips/scene_02.mp4"], "durations_s": [3.2, 4.1],
         "audio_path": "narration.ogg", "subtitles_path": "subs/narration.srt", "output_dir": "final"},
    ]})

    clips: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=MAX_CLIPS, description="Clip files (any container ffmpeg reads), joined in this order.")
    durations_s: list[Annotated[float, Field(gt=0, le=MAX_SLOT_S)]] | None = Field(
        default=None, min_length=1, max_length=MAX_CLIPS,
        description="The slot each clip fills on the timeline, one per clip (e.g. its scene's narration time). "
        "A shorter clip holds its last frame; a longer one is trimmed. Default: each clip's own duration.")
    audio_path: str | None = Field(
        default=None, min_length=1,
        description="Narration (wav, ogg, mp3, m4a, ...), muxed as AAC 48 kHz. It must not be shorter than the "
        "video by more than one frame; a longer one extends the last slot (last frame held) to its end.")
    audio_bitrate_kbps: int = Field(default=192, ge=32, le=512, description="AAC bitrate.")
    subtitles_path: str | None = Field(default=None, min_length=1,
                                       description="Captions (SRT, VTT or ASS), timed on the output timeline.")
    burn_subtitles: bool = Field(default=True, description="Burn the captions into the picture (libass): large "
                                 "bold text with an outline, centred in the lower third. ASS files keep their "
                                 "own styles.")
    soft_subtitles: bool = Field(default=True, description="Also add the captions as a `mov_text` subtitle track.")
    caption_font: str = Field(default="DejaVu Sans", max_length=100, pattern=FONT_NAME_PATTERN,
                              json_schema_extra={ERROR_MESSAGE_KEY: "must be a font family name without commas, "
                                                 "braces, backslashes or control characters"},
                              description="Font family for burned SRT/VTT captions (found through fontconfig).")
    caption_font_size: int | None = Field(default=None, ge=4, le=512,
                                          description="Caption font size in output pixels; default: height / 24.")
    caption_margin_v: int | None = Field(default=None, ge=0, le=4096,
                                         description="Caption baseline distance from the bottom edge in output "
                                         "pixels; default: height / 6 - a line (text centred in the lower third).")
    width: int = Field(default=1080, ge=16, le=4096, multiple_of=2, description="Output width (even).")
    height: int = Field(default=1920, ge=16, le=4096, multiple_of=2, description="Output height (even).")
    fps: int = Field(default=30, ge=1, le=120, description="Output frame rate; clips of another rate are resampled.")
    fit: Fit | None = Field(default=None, description=FIT_HELP)
    crf: int = Field(default=20, ge=0, le=51, description="x264 constant rate factor (lower: better, bigger).")
    preset: Preset = Field(default="medium", description="x264 speed/size preset.")
    name: str = file_name_field(default="final", max_length=120, description="Output file stem: `<name>.mp4`.")


class Scene(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="0-based position in `clips`.")
    clip_path: str
    start_s: float = Field(ge=0, description="Where the slot starts in the output (a frame boundary).")
    end_s: float = Field(ge=0)
    source_duration_s: float = Field(ge=0, description="The clip's own duration.")
    held_s: float = Field(ge=0, description="Time the clip's last frame is held to fill its slot.")
    trimmed_s: float = Field(ge=0, description="Time cut from the clip's end to fit its slot.")


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Absolute path of the mp4 after the job.")
    duration_s: float = Field(ge=0, description="Video duration, probed from the written file.")
    width: int
    height: int
    fps: int
    frames: int = Field(ge=1, description="round(timeline_s x fps).")
    video_codec: str = Field(description="Always `h264`.")
    pix_fmt: str = Field(description="Always `yuv420p`.")
    audio_codec: str | None = Field(description="`aac`, or null without `audio_path`.")
    audio_duration_s: float | None = Field(ge=0, description="Audio stream duration in the written file.")
    drift_s: float | None = Field(description="audio_duration_s - duration_s, measured on the written file.")
    faststart: bool = Field(description="The moov atom precedes mdat (checked on the file).")
    subtitle_track: bool = Field(description="The file has a soft (`mov_text`) subtitle track.")
    captions_burned: bool
    size_bytes: int = Field(ge=0)
    scenes: list[Scene]
    extended_s: float | None = Field(default=None, ge=0, description="How far the audio extended the last slot "
                                     "(its last frame held); null when it did not.")
