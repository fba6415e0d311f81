"""The compose worker as a real process: tiny 90x160 clips from ffmpeg's lavfi sources, a sine "narration",
an SRT with two cues. Every output is probed back with PyAV and decoded to pixels where the claim is visual.

One module-scoped set of inputs and one composed file serve most tests (each compose takes well under a second).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from worker_process import ServeSession, paths, run

COMPOSE = [sys.executable, "-m", "workers.compose"]
FPS, WIDTH, HEIGHT = 30, 90, 160
FRAME_S = 1 / FPS
SRT = "1\n00:00:00,200 --> 00:00:01,200\nHELLO THERE\n\n2\n00:00:02,000 --> 00:00:02,800\nWORLD\n"


def _ffmpeg(*argv: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *argv], check=True, timeout=60)


def _clip(path: Path, source: str, size: str, rate: int, seconds: float) -> Path:
    _ffmpeg("-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}:duration={seconds}", "-pix_fmt", "yuv420p",
            "-c:v", "libx264", "-preset", "ultrafast", str(path))
    return path


def _tone(path: Path, seconds: float) -> Path:
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-ar", "22050", str(path))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compose-media")
    (d / "captions.srt").write_text(SRT, encoding="utf-8")
    (d / "garbage.srt").write_bytes(b"\x00\x01 this is not a subtitle file \xff\xfe")
    (d / "not_video.mp4").write_bytes(b"this is text, not an mp4" * 10)
    return {
        "moving": _clip(d / "moving 'a',b.mp4", "testsrc2", f"{WIDTH}x{HEIGHT}", 24, 1.0),  # odd name: escaping
        "moving2": _clip(d / "moving2.mp4", "testsrc2", f"{WIDTH}x{HEIGHT}", 30, 2.0),
        "wide": _clip(d / "wide.mp4", "testsrc2", "160x90", 30, 1.0),
        "narration": _tone(d / "narration.wav", 3.0),
        "short": _tone(d / "short.wav", 2.0),
        "captions": d / "captions.srt", "garbage": d / "garbage.srt", "not_video": d / "not_video.mp4",
        "audio_as_clip": _tone(d / "tone.m4a", 1.0),
    }


def base_args(media: dict[str, Path], out: Path, **fields) -> dict:
    return {"clips": [str(media["moving"]), str(media["moving2"])], "durations_s": [1.5, 1.5],
            "audio_path": str(media["narration"]), "subtitles_path": str(media["captions"]),
            "width": WIDTH, "height": HEIGHT, "fps": FPS, "preset": "ultrafast", "output_dir": str(out), **fields}


def frames_of(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


@pytest.fixture(scope="module")
def composed(media, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("composed")
    code, doc = run(COMPOSE, tmp, base_args(media, tmp / "out"))
    assert code == 0, doc["error"]
    return doc


def test_the_file_has_h264_aac_and_captions_at_9_16_with_faststart(composed):
    import av

    result = composed["result"]
    path = Path(result["path"])
    [output] = composed["outputs"]
    assert output["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and output["bytes"] == path.stat().st_size
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (video.width, video.height) == (WIDTH, HEIGHT) and video.width * 16 == video.height * 9
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == 48_000
        assert [s.codec_context.name for s in container.streams.subtitles] == ["mov_text"]
        video_s = float(video.duration * video.time_base)
        audio_s = float(audio.duration * audio.time_base)
    data = path.read_bytes()
    assert 0 < data.index(b"moov") < data.index(b"mdat")  # +faststart: the index first
    assert abs(video_s - 3.0) <= FRAME_S and abs(audio_s - video_s) <= FRAME_S
    assert result["frames"] == 90 and len(frames_of(path)) == 90
    assert result["faststart"] and result["subtitle_track"] and result["captions_burned"]
    assert abs(result["drift_s"] - (audio_s - video_s)) < 1e-3 and result["extended_s"] is None


def test_scene_ranges_hold_a_short_clip_and_trim_a_long_one(composed):
    first, second = composed["result"]["scenes"]
    assert (first["start_s"], first["end_s"], second["start_s"], second["end_s"]) == (0.0, 1.5, 1.5, 3.0)
    assert (first["source_duration_s"], first["held_s"], first["trimmed_s"]) == (1.0, 0.5, 0.0)
    assert (second["source_duration_s"], second["held_s"], second["trimmed_s"]) == (2.0, 0.0, 0.5)
    frames = frames_of(Path(composed["result"]["path"]))
    top = frames[:, :100]  # above the captions
    held = [np.abs(top[i] - top[30]).mean() for i in range(31, 45)]  # 1.0-1.5 s: the 1 s clip's last frame
    moving = [np.abs(top[i] - top[i - 1]).mean() for i in range(46, 90)]  # the second clip (testsrc2) plays
    assert max(held) < 2.0 and np.median(moving) > 2.5  # only encoder noise on the held frames


def test_captions_are_burned_where_a_cue_is_shown_and_only_there(composed, media, tmp_path):
    code, doc = run(COMPOSE, tmp_path, base_args(media, tmp_path / "out", subtitles_path=None))
    assert code == 0 and not doc["result"]["subtitle_track"] and not doc["result"]["captions_burned"]
    with_captions, without = frames_of(Path(composed["result"]["path"])), frames_of(Path(doc["result"]["path"]))
    lower_third = slice(HEIGHT * 2 // 3, HEIGHT)

    difference = np.abs(with_captions[:, lower_third] - without[:, lower_third]).mean(axis=(1, 2, 3))
    shown = [*range(7, 36), *range(60, 84)]  # cues at 0.2-1.2 s and 2.0-2.8 s, 30 fps
    hidden = [*range(0, 5), *range(38, 58), *range(86, 90)]  # a frame's margin around each cue edge
    assert difference[shown].min() > 3 and difference[hidden].max() < 2  # hidden: encoder noise only


def test_audio_longer_than_the_clips_extends_the_last_slot(media, tmp_path):
    code, doc = run(COMPOSE, tmp_path, base_args(media, tmp_path / "out", durations_s=None, subtitles_path=None))
    result = doc["result"]
    assert code == 0 and result["frames"] == 90 and abs(result["duration_s"] - 3.0) <= FRAME_S
    assert result["extended_s"] == pytest.approx(0.0, abs=1e-6) or result["extended_s"] is None
    # clips of 1 s + 2 s = the 3 s narration: nothing to extend; a 2 s slot list leaves 1 s for the last clip
    code, doc = run(COMPOSE, tmp_path, base_args(media, tmp_path / "out2", durations_s=[1.0, 1.0]))
    result = doc["result"]
    assert code == 0 and result["extended_s"] == pytest.approx(1.0) and result["frames"] == 90
    assert result["scenes"][1]["end_s"] == 3.0 and result["scenes"][1]["held_s"] == pytest.approx(0.0)
    assert any("longer than the clips" in w for w in doc["warnings"])


@pytest.mark.parametrize("fit, black_top", [("cover", False), ("contain", True)])
def test_fit_brings_a_16_9_clip_to_the_9_16_size(media, tmp_path, fit, black_top):
    args = base_args(media, tmp_path / "out", clips=[str(media["wide"])], durations_s=None, audio_path=None,
                     subtitles_path=None, fit=fit)
    code, doc = run(COMPOSE, tmp_path, args)
    assert code == 0, doc["error"]
    assert (doc["result"]["width"], doc["result"]["height"]) == (WIDTH, HEIGHT) and doc["result"]["frames"] == 30
    assert doc["result"]["audio_codec"] is None and doc["result"]["drift_s"] is None
    frames = frames_of(Path(doc["result"]["path"]))
    assert frames.shape[1:3] == (HEIGHT, WIDTH)
    assert (frames[0, :20].max() < 30) == black_top  # contain pads above and below; cover fills the frame


def _missing(tmp_path: Path) -> str:
    return str(tmp_path / "missing.mp4")


@pytest.mark.parametrize("change, path, text", [
    (lambda m, t: {"clips": [str(m["moving"]), _missing(t)]}, "$.clips[1]", "does not exist"),
    (lambda m, t: {"clips": [str(m["not_video"])], "durations_s": None}, "$.clips[0]", "not a readable media file"),
    (lambda m, t: {"clips": [str(m["audio_as_clip"])], "durations_s": None}, "$.clips[0]", "no video stream"),
    (lambda m, t: {"clips": [str(m["moving"]), str(m["wide"])]}, "$.fit", "clips[1] 160x90"),
    (lambda m, t: {"clips": [str(m["wide"])], "durations_s": None}, "$.fit", "aspect"),
    (lambda m, t: {"durations_s": [1.5]}, "$.durations_s", "1 entries but clips has 2"),
    (lambda m, t: {"audio_path": str(m["short"])}, "$.audio_path",
     "lasts 2.000 s, shorter than the video timeline (3.000 s)"),
    (lambda m, t: {"audio_path": _missing(t)}, "$.audio_path", "does not exist"),
    (lambda m, t: {"subtitles_path": _missing(t)}, "$.subtitles_path", "does not exist"),
    (lambda m, t: {"subtitles_path": str(m["garbage"])}, "$.subtitles_path", "does not parse"),
])
def test_bad_input_is_invalid_input_at_its_path_and_writes_nothing(media, tmp_path, change, path, text):
    code, doc = run(COMPOSE, tmp_path, base_args(media, tmp_path / "out", **change(media, tmp_path)))
    assert code == 2 and doc["error"]["kind"] == "invalid_input", doc["error"]
    assert path in paths(doc) and text in doc["error"]["message"]
    assert not (tmp_path / "out").exists()


def test_without_ffmpeg_on_path_the_answer_says_to_install_it(media, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    code, doc = run(COMPOSE, tmp_path, base_args(media, tmp_path / "out"), env={"PATH": str(empty)})
    assert code == 3 and doc["error"]["kind"] == "model_unavailable"
    assert "install ffmpeg" in doc["error"]["message"] and doc["error"]["details"]["missing_programs"] == ["ffmpeg"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_serve_answers_two_requests_in_one_process(media, tmp_path):
    serve = ServeSession(COMPOSE)
    try:
        first = serve.run("one", base_args(media, tmp_path / "one"))
        second = serve.run("two", base_args(media, tmp_path / "two", soft_subtitles=False, name="again"))
    finally:
        serve.close()
    assert first["success"] and second["success"], (first["error"], second["error"])
    assert second["result"]["path"].endswith("again.mp4") and not second["result"]["subtitle_track"]
    assert second["metrics"]["model_cache_hit"] and second["metrics"]["model_loads"] == 1
    assert serve.proc.returncode == 0


def test_describe_and_help_come_from_the_contract(tmp_path):
    describe = subprocess.run([*COMPOSE, "--describe"], capture_output=True, timeout=60, check=True,
                              env={**os.environ})
    info = json.loads(describe.stdout)
    assert info["name"] == "compose" and info["devices"] == ["cpu"] and info["model_key_fields"] == []
    usage = subprocess.run([*COMPOSE, "--help"], capture_output=True, timeout=60, check=True).stdout.decode()
    assert "durations_s" in usage and "subtitles_path" in usage
