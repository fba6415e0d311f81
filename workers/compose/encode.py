"""One ffmpeg run that cuts, scales, joins, captions and muxes: the argv list, and running it with progress.

The filter graph per clip: timestamps from zero -> resample to the output rate -> fit to the output size ->
hold the last frame forever (`tpad`) -> keep exactly the slot's frames (`trim`). The slots are concatenated,
the captions burned in, the audio padded with silence or cut to the exact video duration. ffmpeg is called
with an argv list (no shell); the only file names inside the graph are fixed ones in its private working
directory (see captions.py).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.runtime import ExternalError, ResourceExhausted

from .captions import BURN_FILE, SOFT_FILE
from .timeline import Timeline

AUDIO_RATE_HZ = 48_000


@dataclass(frozen=True)
class EncodePlan:
    clips: list[Path]
    timeline: Timeline
    width: int
    height: int
    fit: str | None
    audio: Path | None
    audio_bitrate_kbps: int
    burn_captions: bool  # BURN_FILE is in the working directory
    soft_captions: bool  # SOFT_FILE is in the working directory
    crf: int
    preset: str


def resize_filter(fit: str | None, width: int, height: int) -> str:
    """Scale (and crop or pad) a clip to the output size. `None`: the caller checked the aspect already."""
    if fit == "cover":
        return f"scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height}"
    if fit == "contain":
        return (f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black")
    return f"scale={width}:{height}"


def filter_graph(plan: EncodePlan) -> str:
    fps, resize = plan.timeline.fps, resize_filter(plan.fit, plan.width, plan.height)
    chains = [f"[{slot.index}:v:0]setpts=PTS-STARTPTS,fps={fps},{resize},setsar=1,format=yuv420p,"
              f"tpad=stop=-1:stop_mode=clone,trim=end_frame={slot.frames},setpts=PTS-STARTPTS[v{slot.index}]"
              for slot in plan.timeline.slots]
    labels = "".join(f"[v{slot.index}]" for slot in plan.timeline.slots)
    captions = f"subtitles=filename={BURN_FILE}" if plan.burn_captions else "null"
    chains.append(f"{labels}concat=n={len(plan.timeline.slots)}:v=1:a=0,{captions}[vout]")
    if plan.audio is not None:
        end = f"{plan.timeline.duration_s:.6f}"
        chains.append(f"[{len(plan.clips)}:a:0]asetpts=PTS-STARTPTS,aresample={AUDIO_RATE_HZ},"
                      f"apad=whole_dur={end},atrim=end={end}[aout]")
    return ";".join(chains)


def _file(path: Path) -> str:
    """`file:` + the absolute path: ffmpeg then never reads a name as a protocol (`concat:`, `subfile,`) or an
    option (`-x`)."""
    return f"file:{path.resolve()}"


def ffmpeg_argv(ffmpeg: str, plan: EncodePlan, output: Path) -> list[str]:
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1", "-y"]
    for clip in plan.clips:
        argv += ["-i", _file(clip)]
    if plan.audio is not None:
        argv += ["-i", _file(plan.audio)]
    if plan.soft_captions:
        argv += ["-i", SOFT_FILE]
    argv += ["-filter_complex", filter_graph(plan), "-map", "[vout]"]
    if plan.audio is not None:
        argv += ["-map", "[aout]"]
    if plan.soft_captions:
        argv += ["-map", f"{len(plan.clips) + (plan.audio is not None)}:s:0", "-c:s", "mov_text"]
    argv += ["-c:v", "libx264", "-preset", plan.preset, "-crf", str(plan.crf), "-pix_fmt", "yuv420p",
             "-r", str(plan.timeline.fps)]
    if plan.audio is not None:
        argv += ["-c:a", "aac", "-b:a", f"{plan.audio_bitrate_kbps}k", "-ar", str(AUDIO_RATE_HZ)]
    argv += ["-movflags", "+faststart", "-f", "mp4", _file(output)]
    return argv


def run_ffmpeg(argv: list[str], cwd: Path, total_frames: int, on_progress: Callable[[float, int], None]) -> None:
    """Run ffmpeg, reporting (fraction, frame) from its `-progress` lines; its errors become worker errors.

    stdin is closed (ffmpeg would otherwise read keystrokes, and in `--serve` mode eat the next request);
    stderr goes to a file so a chatty ffmpeg can never block on a full pipe; ffmpeg is killed if the job
    unwinds (SIGTERM, an exception)."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        try:
            for line in proc.stdout:
                key, _, value = line.decode("utf-8", "replace").strip().partition("=")
                if key == "frame" and value.isdigit():
                    on_progress(min(int(value) / total_frames, 1.0), int(value))
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if code != 0:
            errors.seek(0)
            raise _ffmpeg_error(code, errors.read().decode("utf-8", "replace").strip())


def _ffmpeg_error(code: int, stderr: str) -> Exception:
    tail = stderr[-2000:] or "(no message)"
    details = {"exit_code": code, "stderr_tail": tail}
    if "No space left on device" in stderr:
        return ResourceExhausted(f"Disk full while encoding: {tail.splitlines()[-1]}", details=details)
    if "Cannot allocate memory" in stderr:
        return ResourceExhausted(f"Out of memory while encoding: {tail.splitlines()[-1]}", details=details)
    return ExternalError(f"ffmpeg failed (exit {code}): {tail.splitlines()[-1]}", retryable=False, details=details)
