"""In-process tests of the whisper worker's pure parts: args contract, time fixing, cue shaping, writers.

No model and no subprocess here; hypothesis drives the cue-shaping invariants.
"""

from __future__ import annotations

import sys

import pysubs2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from workers.whisper.contract import Args, Result
from workers.whisper.subtitles import (
    CueLimits,
    TimedSegment,
    TimedWord,
    display_text,
    fix_times,
    shape_cues,
    spread_words,
    write_srt,
    write_vtt,
)

BASE = {"audio_path": "a.wav", "output_dir": "out", "model": "tiny.en"}


# --- contract -------------------------------------------------------------------------------------------
def test_args_defaults_are_short_form_captions():
    args = Args.model_validate(BASE)
    assert args.compute_type == "auto" and args.device == "auto" and args.language == "auto"
    assert args.word_timestamps and args.vad_filter and not args.condition_on_previous_text
    assert 1 <= args.max_words_per_cue <= 3
    assert args.formats == ["json", "srt", "vtt"]


@pytest.mark.parametrize("bad", [
    {"compute_type": "float16", "device": "cpu"},
    {"compute_type": "int8_float16", "device": "cpu"},
    {"device": "gpu"},
    {"device": "cuda:x"},
    {"language": "klingon"},
    {"formats": ["srt", "srt"]},
    {"formats": ["docx"]},
    {"basename": "../escape"},
    {"basename": "a/b"},
    {"beam_size": 0},
    {"max_words_per_cue": 0},
    {"vad_threshold": 1.5},
    {"max_cue_duration_s": 0},
    {"hallucination_silence_threshold_s": 2.0, "word_timestamps": False},
    {"unknown_field": 1},
    {"model": ""},
])
def test_args_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        Args.model_validate({**BASE, **bad})


def test_args_take_device_and_language_exactly_as_the_schema_spells_them():
    args = Args.model_validate({**BASE, "device": "cuda:1", "language": "de", "compute_type": "float16"})
    assert (args.device, args.language) == ("cuda:1", "de")
    for variant in ({"device": " CUDA:1 "}, {"language": "DE"}):  # no silent normalising: the schema refuses them
        with pytest.raises(ValidationError):
            Args.model_validate({**BASE, **variant})


def test_contract_import_is_light():
    # the contract module must not drag in faster-whisper (the schema generator imports it)
    assert "faster_whisper" not in sys.modules or "workers.whisper.worker" in sys.modules
    schema = Result.model_json_schema(mode="serialization")
    assert {"text", "segments", "words", "cues", "files"} <= set(schema["properties"])


# --- fix_times -------------------------------------------------------------------------------------------
def test_fix_times_clamps_drift_into_segments():
    segs = [
        TimedSegment(0.0, 2.0, "a b", [TimedWord("a", -0.5, 0.4), TimedWord("b", 0.3, 2.6)]),
        TimedSegment(1.8, 4.0, "c", [TimedWord("c", 0.0, 9.0)]),  # overlaps the previous segment, long word
    ]
    fixes = fix_times(segs, duration_s=3.5)
    assert fixes > 0
    assert (segs[0].start_s, segs[0].end_s) == (0.0, 2.0)
    assert [(w.start_s, w.end_s) for w in segs[0].words] == [(0.0, 0.4), (0.4, 2.0)]
    assert segs[1].start_s == 2.0 and segs[1].end_s == 3.5
    assert segs[1].words[0].end_s == 3.5 and segs[1].words[0].start_s == pytest.approx(2.0)


def test_fix_times_caps_long_first_word_after_silence():
    segs = [TimedSegment(0.0, 8.0, "hello", [TimedWord("hello", 0.0, 6.0)])]
    fix_times(segs, duration_s=8.0)
    assert segs[0].words[0].end_s - segs[0].words[0].start_s <= 2.0
    assert segs[0].words[0].end_s == 6.0


times = st.floats(min_value=-5, max_value=60, allow_nan=False, allow_infinity=False)


@st.composite
def raw_segments(draw):
    segs = []
    for _ in range(draw(st.integers(0, 6))):
        words = [TimedWord(draw(st.sampled_from(["a", "to", "three", "Wednesday,", "fox."])), draw(times), draw(times))
                 for _ in range(draw(st.integers(0, 8)))]
        segs.append(TimedSegment(draw(times), draw(times), "x", words))
    return segs


@settings(max_examples=200, deadline=None)
@given(raw_segments(), st.floats(min_value=0, max_value=50))
def test_fix_times_invariants(segs, duration):
    fix_times(segs, duration)
    prev_end = 0.0
    for seg in segs:
        assert 0 <= prev_end <= seg.start_s <= seg.end_s <= round(duration, 3)
        cursor = seg.start_s
        for w in seg.words:
            assert cursor <= w.start_s <= w.end_s <= seg.end_s
            cursor = w.end_s
        prev_end = seg.end_s


# --- shape_cues ------------------------------------------------------------------------------------------
def check_cues(cues, words, limits: CueLimits) -> None:
    """The invariants every cue list must satisfy (shared with the end-to-end tests)."""
    assert [w for c in cues for w in c.words] == [display_text(w.text) for w in words if display_text(w.text)]
    prev_end = 0
    for cue in cues:
        assert cue.start_ms >= prev_end, "cues overlap"
        assert cue.end_ms >= cue.start_ms
        assert cue.end_ms - cue.start_ms <= round(limits.max_cue_duration_s * 1000)
        assert 1 <= len(cue.words) <= limits.max_words_per_cue
        assert 1 <= len(cue.lines) <= limits.max_lines
        for line in cue.lines:
            assert len(line) <= limits.max_chars_per_line or " " not in line, line
        assert " ".join(cue.lines) == " ".join(cue.words)
        prev_end = cue.end_ms


def test_shape_cues_basic_three_words():
    words = [TimedWord(t, i * 0.4, i * 0.4 + 0.3) for i, t in enumerate("one two three four five. six".split())]
    limits = CueLimits(max_words_per_cue=3, max_chars_per_line=24, max_lines=1)
    cues = shape_cues(words, limits, audio_end_s=10)
    assert [c.text for c in cues] == ["one two three", "four five.", "six"]
    assert cues[0].start_s == 0.0 and cues[0].end_s == pytest.approx(1.1)
    check_cues(cues, words, limits)


def test_shape_cues_splits_on_pause_and_extends_short_cues():
    words = [TimedWord("hi", 0.0, 0.1), TimedWord("there", 2.0, 2.1)]
    limits = CueLimits(min_cue_duration_s=0.5)
    cues = shape_cues(words, limits, audio_end_s=2.3)
    assert [c.text for c in cues] == ["hi", "there"]
    assert cues[0].end_ms == 500 and cues[1].end_ms == 2300  # extended, but not past the audio end


def test_shape_cues_zero_length_word_borrows_time():
    words = [TimedWord("a", 0.0, 1.0), TimedWord("b.", 1.0, 1.0), TimedWord("c", 1.0, 1.0)]
    cues = shape_cues(words, CueLimits(max_words_per_cue=1), audio_end_s=1.0)
    check_cues(cues, words, CueLimits(max_words_per_cue=1))
    assert all(c.end_ms > c.start_ms for c in cues)


def test_display_text_escapes_markup():
    assert display_text(" {laugh}<b>&co-->x ") == "(laugh)‹b›＆co→x"
    assert display_text("two words") == "two\u00a0words"  # one word stays on one line


word_text = st.one_of(st.text(alphabet="abcXYZé.,?-'{<& ", min_size=1, max_size=12), st.just("Wednesday,"),
                      st.just("supercalifragilisticexpialidocious."))


@st.composite
def timed_words(draw):
    t, words = 0.0, []
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.floats(min_value=0, max_value=2.0))
        dur = draw(st.floats(min_value=0, max_value=2.0))
        words.append(TimedWord(draw(word_text), round(t, 3), round(t + dur, 3)))
        t += dur
    return words


limits_st = st.builds(
    CueLimits,
    max_words_per_cue=st.integers(1, 8),
    max_chars_per_line=st.integers(4, 40),
    max_lines=st.integers(1, 3),
    max_cue_duration_s=st.floats(min_value=0.2, max_value=8),
    min_cue_duration_s=st.floats(min_value=0, max_value=2),
    split_on_pause_s=st.floats(min_value=0.05, max_value=3),
    split_on_punctuation=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(timed_words(), limits_st)
def test_shape_cues_invariants(words, limits):
    cues = shape_cues(words, limits, audio_end_s=(words[-1].end_s + 1) if words else None)
    check_cues(cues, words, limits)


def test_spread_words_covers_segment():
    words = spread_words(TimedSegment(1.0, 3.0, "one two three"))
    assert [w.text for w in words] == ["one", "two", "three"]
    assert words[0].start_s == 1.0 and words[-1].end_s == 3.0
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(words, words[1:], strict=False))


# --- writers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,writer", [("srt", write_srt), ("vtt", write_vtt)])
def test_writers_round_trip(tmp_path, fmt, writer):
    words = [TimedWord(t, i * 0.5, i * 0.5 + 0.4) for i, t in enumerate("Hello there, a --> b {x} & <y> end.".split())]
    limits = CueLimits(max_words_per_cue=2, max_chars_per_line=8, max_lines=2)
    cues = shape_cues(words, limits, audio_end_s=10)
    path = tmp_path / f"out.{fmt}"
    writer(cues, path)
    parsed = pysubs2.load(str(path))
    assert [(e.start, e.end, e.plaintext) for e in parsed] == [(c.start_ms, c.end_ms, c.text) for c in cues]
    if fmt == "vtt":
        assert path.read_text(encoding="utf-8").startswith("WEBVTT")
    else:
        assert "00:00:00,000 --> 00:00:00,900" in path.read_text(encoding="utf-8")
