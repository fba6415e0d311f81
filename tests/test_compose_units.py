"""The compose worker's pure parts: the timeline plan, the faststart check, caption styling and the filter graph."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.compose.captions import caption_style
from workers.compose.encode import EncodePlan, filter_graph
from workers.compose.probe import moov_before_mdat
from workers.compose.timeline import audio_too_short, plan_timeline

durations = st.lists(st.floats(min_value=0.05, max_value=20, allow_nan=False), min_size=1, max_size=8)


@given(sources=durations, fps=st.integers(1, 120), data=st.data())
def test_slots_tile_the_timeline_and_hold_or_trim_but_never_both(sources, fps, data):
    slots_s = data.draw(st.lists(st.floats(0.05, 20), min_size=len(sources), max_size=len(sources)) | st.none())
    timeline = plan_timeline(sources, slots_s, fps)
    wanted = math.fsum(slots_s if slots_s is not None else sources)
    assert timeline.slots[0].start_frame == 0
    assert all(a.end_frame == b.start_frame for a, b in zip(timeline.slots, timeline.slots[1:], strict=False))
    assert all(s.frames >= 1 and (s.held_s == 0 or s.trimmed_s == 0) for s in timeline.slots)
    if all(s * fps > 1 for s in (slots_s or sources)):  # no slot below a frame: exact rounding
        assert timeline.frames == round(wanted * fps)
    assert timeline.extended_s is None


@given(sources=durations, extra_s=st.floats(0.001, 30), fps=st.integers(1, 60))
def test_a_longer_audio_extends_only_the_last_slot(sources, extra_s, fps):
    plain = plan_timeline(sources, None, fps)
    longer = plan_timeline(sources, None, fps, audio_s=math.fsum(sources) + extra_s)
    assert longer.extended_s == pytest.approx(extra_s)
    assert longer.slots[:-1] == plain.slots[:-1]
    assert longer.frames == max(round(math.fsum([*sources, extra_s]) * fps), longer.slots[-1].start_frame + 1)


def test_audio_may_be_short_by_one_frame_but_not_more():
    assert not audio_too_short(2.97, 3.0, 30) and audio_too_short(2.96, 3.0, 30)


def test_faststart_is_read_from_the_box_order(tmp_path):
    def mp4(name: str, *flags: str) -> Path:
        path = tmp_path / name
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "color=size=32x32:duration=0.2",
                        "-c:v", "libx264", "-preset", "ultrafast", *flags, str(path)], check=True, timeout=60)
        return path

    assert moov_before_mdat(mp4("fast.mp4", "-movflags", "+faststart"))
    assert not moov_before_mdat(mp4("slow.mp4"))
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00")
    assert not moov_before_mdat(tmp_path / "junk.mp4")


def test_caption_defaults_scale_with_the_frame_and_sit_in_the_lower_third():
    style = caption_style("DejaVu Sans", 1080, 1920, None, None)
    assert style.font_size == 80
    line_middle = 1920 - style.margin_v - 0.6 * style.font_size
    assert 1920 * 2 / 3 < line_middle < 1920 and line_middle == pytest.approx(1920 * 5 / 6, abs=1)
    assert caption_style("X", 1080, 1920, 50, 10) == caption_style("X", 1080, 1920, 50, 10)
    assert caption_style("X", 1080, 1920, 50, 10).margin_v == 10


def test_no_user_path_enters_the_filter_graph():
    plan = EncodePlan(clips=[Path("/odd/it's, a [clip]:1.mp4")], timeline=plan_timeline([1.0], None, 30),
                      width=90, height=160, fit="cover", audio=Path("/odd/na;rration.wav"), audio_bitrate_kbps=192,
                      burn_captions=True, soft_captions=True, crf=20, preset="medium")
    graph = filter_graph(plan)
    assert "/odd" not in graph and "subtitles=filename=captions.ass" in graph
    assert "trim=end_frame=30" in graph and "crop=90:160" in graph
