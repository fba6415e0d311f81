"""The compose worker: clips + narration + captions -> the finished mp4.

Recipe: check_inputs (probe clips, audio and captions; no encoding) -> load (find ffmpeg: the worker's only
"model") -> plan the timeline -> write the caption files -> one ffmpeg run -> probe the written file -> result.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workers.runtime import InternalError, JobContext, ModelUnavailable, Worker

from . import __version__
from .captions import caption_style, write_caption_files
from .contract import Args, Result, Scene
from .encode import EncodePlan, ffmpeg_argv, run_ffmpeg
from .inputs import Inputs, inspect_inputs
from .probe import moov_before_mdat, probe_output
from .timeline import Timeline, plan_timeline

MEDIA_TYPE = "video/mp4"


@dataclass(frozen=True)
class Toolchain:
    """What `load` finds: the ffmpeg binary. Encoding runs on the CPU."""

    ffmpeg: str
    device: str = "cpu"


def find_ffmpeg() -> Toolchain:
    path = shutil.which("ffmpeg")
    if path is None:
        raise ModelUnavailable("the compose worker needs the ffmpeg program, which is not on PATH: install ffmpeg "
                               "(Debian/Ubuntu: `apt-get install ffmpeg`; macOS: `brew install ffmpeg`; Windows: "
                               "`winget install ffmpeg`) with libx264 and libass",
                               details={"missing_programs": ["ffmpeg"]})
    return Toolchain(path)


def scenes(timeline: Timeline, clip_paths: list[str]) -> list[Scene]:
    return [Scene(index=s.index, clip_path=clip_paths[s.index], start_s=round(s.start_s, 6), end_s=round(s.end_s, 6),
                  source_duration_s=round(s.source_duration_s, 6), held_s=round(s.held_s, 6),
                  trimmed_s=round(s.trimmed_s, 6))
            for s in timeline.slots]


class ComposeWorker(Worker[Args, Result]):
    name = "compose"
    version = __version__
    Args = Args
    Result = Result
    extra = "compose"
    requires = ("av", "pysubs2")

    # --- cheap checks: container headers only ------------------------------------------------------------
    def check_inputs(self, args: Args) -> None:
        inspect_inputs(args, self.name)

    model_key_fields = ()

    def model_key(self, args: Args) -> str:
        return "ffmpeg"  # no model: every request shares the one toolchain

    def load(self, args: Args, ctx: JobContext) -> Toolchain:
        return find_ffmpeg()

    def devices(self) -> list[str]:
        return ["cpu"]

    # --- run -----------------------------------------------------------------------------------------------
    def run(self, model: Toolchain, args: Args, ctx: JobContext) -> Result:
        inputs = inspect_inputs(args, self.name)
        timeline = plan_timeline([v.duration_s for v in inputs.videos], args.durations_s, args.fps, inputs.audio_s)
        self._warn_about(args, inputs, timeline, ctx)
        file_name = f"{args.name}.mp4"
        output = ctx.output_path(file_name, MEDIA_TYPE)
        with tempfile.TemporaryDirectory(prefix="compose-") as work:
            plan = self._encode_plan(args, inputs, timeline, Path(work))
            ctx.progress(0.0, "encoding", clips=len(inputs.clips), frames=timeline.frames)
            run_ffmpeg(ffmpeg_argv(model.ffmpeg, plan, output), Path(work), timeline.frames,
                       lambda fraction, frame: ctx.progress(0.02 + 0.95 * fraction, "encoding", frame=frame,
                                                            frames=timeline.frames))
        result = self._describe_output(args, output, ctx.final_path(file_name), timeline, plan)
        ctx.extra_metrics.update(frames=result.frames, clips=len(inputs.clips), duration_s=result.duration_s,
                                 drift_s=result.drift_s)
        ctx.progress(1.0, "done", frames=result.frames)
        return result

    @staticmethod
    def _warn_about(args: Args, inputs: Inputs, timeline: Timeline, ctx: JobContext) -> None:
        if timeline.extended_s:
            ctx.warn(f"the audio is {timeline.extended_s:.3f} s longer than the clips: the last clip's last frame "
                     "is held to the audio's end")
        if args.subtitles_path is not None and not (args.burn_subtitles or args.soft_subtitles):
            ctx.warn("subtitles_path is ignored: burn_subtitles and soft_subtitles are both false")

    @staticmethod
    def _encode_plan(args: Args, inputs: Inputs, timeline: Timeline, work: Path) -> EncodePlan:
        captions = inputs.captions is not None
        if captions:
            style = caption_style(args.caption_font, args.width, args.height, args.caption_font_size,
                                  args.caption_margin_v)
            write_caption_files(inputs.captions, style, work)
        return EncodePlan(clips=inputs.clips, timeline=timeline, width=args.width, height=args.height, fit=args.fit,
                          audio=inputs.audio, audio_bitrate_kbps=args.audio_bitrate_kbps,
                          burn_captions=captions and args.burn_subtitles,
                          soft_captions=captions and args.soft_subtitles, crf=args.crf, preset=args.preset)

    @staticmethod
    def _describe_output(args: Args, output: Path, final: Path, timeline: Timeline, plan: EncodePlan) -> Result:
        info = probe_output(output)
        if info.frames != timeline.frames:  # the graph guarantees the count; a mismatch is a bug to report
            raise InternalError(f"ffmpeg wrote {info.frames} frames, {timeline.frames} were planned",
                                details={"frames": info.frames, "planned_frames": timeline.frames})
        drift = None if info.audio_duration_s is None else round(info.audio_duration_s - info.duration_s, 6)
        return Result(
            path=str(final), duration_s=round(info.duration_s, 6), width=info.width, height=info.height,
            fps=args.fps, frames=info.frames, video_codec=info.video_codec, pix_fmt=info.pix_fmt,
            audio_codec=info.audio_codec,
            audio_duration_s=None if info.audio_duration_s is None else round(info.audio_duration_s, 6),
            drift_s=drift, faststart=moov_before_mdat(output), subtitle_track=info.subtitle_track,
            captions_burned=plan.burn_captions, size_bytes=output.stat().st_size,
            scenes=scenes(timeline, args.clips),
            extended_s=None if timeline.extended_s is None else round(timeline.extended_s, 6))
