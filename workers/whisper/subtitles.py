"""From recognised words to subtitle cues and files. Pure Python (pysubs2 only for writing).

Three steps, each testable on synthetic data:
  1. `fix_times`   - make word and segment times ordered, inside their segment and inside the audio
                     (faster-whisper's DTW alignment drifts: words can start before their segment,
                     overlap the previous word, or stretch over a long silence).
  2. `shape_cues`  - group words into short cues for vertical video (words, lines, characters,
                     duration, pauses, punctuation), on an integer-millisecond grid so that the
                     files (millisecond resolution) hold exactly the times the result reports.
  3. `write_*`     - SRT and WebVTT through pysubs2, plain text.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: A word longer than this is assumed to have absorbed a silence before it; its start is moved later.
#: (Whisper's DTW alignment is known to start the first word after a pause seconds too early.)
MAX_WORD_DURATION_S = 2.0
#: A new cue starts after a word ending with one of these (sentence or clause end).
BREAK_AFTER = (".", "!", "?", ",", ";", ":", "…", "。", "！", "？", "，")
#: Characters that subtitle formats would treat as markup, mapped to look-alikes that display the same.
#: (`{...}` is an override tag for pysubs2/ASS, `<...>` a tag in SRT/VTT, `&` starts a VTT entity,
#: `-->` is the SRT/VTT timing arrow.)
_DISPLAY = str.maketrans({"{": "(", "}": ")", "\\": "/", "<": "‹", ">": "›", "&": "＆"})


def display_text(text: str) -> str:
    """Text as it may appear inside a subtitle file. Spaces inside a word become no-break spaces,
    so that line wrapping never splits it."""
    return "\u00a0".join(text.replace("-->", "→").translate(_DISPLAY).split())


@dataclass
class TimedWord:
    text: str
    start_s: float
    end_s: float
    probability: float = 1.0


@dataclass
class TimedSegment:
    start_s: float
    end_s: float
    text: str
    words: list[TimedWord] = field(default_factory=list)


def fix_times(segments: Sequence[TimedSegment], duration_s: float,
              max_word_duration_s: float = MAX_WORD_DURATION_S) -> int:
    """Clamp segment and word times in place; return how many values had to change.

    Afterwards: 0 <= seg.start <= seg.end <= duration, segments do not overlap, and inside each
    segment the words satisfy seg.start <= w.start <= w.end <= seg.end and w.start >= previous w.end.
    Times are rounded to milliseconds (the resolution of SRT/VTT).
    """
    fixes = 0
    prev_end = 0.0
    limit = max(0.0, round(duration_s, 3))

    def clamp(value: float, low: float, high: float) -> float:
        nonlocal fixes
        fixed = min(max(value, low), high)
        if fixed != value:
            fixes += 1
        return fixed

    for seg in segments:
        seg.start_s = clamp(round(seg.start_s, 3), prev_end, limit)
        seg.end_s = clamp(round(seg.end_s, 3), seg.start_s, limit)
        cursor = seg.start_s
        for word in seg.words:
            end = clamp(round(word.end_s, 3), cursor, seg.end_s)
            start = clamp(round(word.start_s, 3), cursor, end)
            if end - start > max_word_duration_s:
                start = round(end - max_word_duration_s, 3)
                fixes += 1
            word.start_s, word.end_s = start, end
            cursor = end
        prev_end = seg.end_s
    return fixes


def spread_words(segment: TimedSegment) -> list[TimedWord]:
    """Words of a segment without word timestamps: times spread over the segment by character count."""
    tokens = segment.text.split()
    if not tokens:
        return []
    total = sum(len(t) + 1 for t in tokens)
    span = segment.end_s - segment.start_s
    words, cursor = [], 0
    for token in tokens:
        start = segment.start_s + span * cursor / total
        cursor += len(token) + 1
        end = segment.start_s + span * cursor / total
        words.append(TimedWord(token, round(start, 3), round(end, 3), 1.0))
    if words:
        words[-1].end_s = segment.end_s
    return words


@dataclass(frozen=True)
class CueLimits:
    max_words_per_cue: int = 3
    max_chars_per_line: int = 24
    max_lines: int = 2
    max_cue_duration_s: float = 3.0
    min_cue_duration_s: float = 0.3
    split_on_pause_s: float = 0.6
    split_on_punctuation: bool = True


@dataclass
class ShapedCue:
    start_ms: int
    end_ms: int
    lines: list[str]
    words: list[str]

    @property
    def start_s(self) -> float:
        return self.start_ms / 1000

    @property
    def end_s(self) -> float:
        return self.end_ms / 1000

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def wrap_words(words: Sequence[str], max_chars: int) -> list[str]:
    """Greedy line wrap that never splits a word (a word longer than a line gets its own line)."""
    return textwrap.wrap(" ".join(words), width=max_chars, break_long_words=False, break_on_hyphens=False) or [""]


def shape_cues(words: Sequence[TimedWord], limits: CueLimits, audio_end_s: float | None = None) -> list[ShapedCue]:
    """Group ordered, non-overlapping words into cues.

    Guarantees (given words from `fix_times`): cues are ordered and never overlap; each holds 1..max_words
    words and 1..max_lines lines; a line longer than max_chars_per_line holds a single word; no cue lasts
    longer than max_cue_duration_s; every cue lasts at least 1 ms unless the words leave no time at all.
    """
    max_ms = max(1, round(limits.max_cue_duration_s * 1000))
    pause_ms = round(limits.split_on_pause_s * 1000)
    items = [(display_text(w.text), round(w.start_s * 1000), round(w.end_s * 1000)) for w in words]
    items = [(t, s, max(s, e)) for t, s, e in items if t]

    groups: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    for item in items:
        text, start, end = item
        if current:
            last_text, _, last_end = current[-1]
            full = (len(current) >= limits.max_words_per_cue
                    or len(wrap_words([t for t, _, _ in current] + [text], limits.max_chars_per_line)) > limits.max_lines
                    or end - current[0][1] > max_ms
                    or start - last_end >= pause_ms
                    or (limits.split_on_punctuation and last_text.endswith(BREAK_AFTER)))
            if full:
                groups.append(current)
                current = []
        current.append(item)
    if current:
        groups.append(current)

    cues = []
    for group in groups:
        start, end = group[0][1], group[-1][2]
        start = max(start, end - max_ms)  # only a single over-long word can exceed the limit
        texts = [t for t, _, _ in group]
        cues.append(ShapedCue(start, end, wrap_words(texts, limits.max_chars_per_line), texts))
    _settle(cues, limits, max_ms, None if audio_end_s is None else round(audio_end_s * 1000))
    return cues


def _settle(cues: list[ShapedCue], limits: CueLimits, max_ms: int, end_limit_ms: int | None) -> None:
    """Lengthen short cues into free time around them; give zero-length cues time from a neighbour."""
    min_ms = max(1, min(round(limits.min_cue_duration_s * 1000), max_ms))
    for i, cue in enumerate(cues):  # 1. extend into the free time after the cue
        room = cues[i + 1].start_ms if i + 1 < len(cues) else end_limit_ms
        target = cue.start_ms + min_ms
        if room is not None:
            target = min(target, room)
        cue.end_ms = max(cue.end_ms, target)
    for i, cue in enumerate(cues):  # 2. still zero-length: the next cue starts at the same instant
        if cue.end_ms > cue.start_ms:
            continue
        prev = cues[i - 1] if i > 0 else None
        nxt = cues[i + 1] if i + 1 < len(cues) else None
        free_before = cue.start_ms - (prev.end_ms if prev is not None else 0)
        if free_before > 0:
            cue.start_ms -= min(min_ms, free_before)
        elif nxt is not None and nxt.end_ms - nxt.start_ms >= 2:
            cue.end_ms = cue.start_ms + max(1, min(min_ms, (nxt.end_ms - nxt.start_ms) // 2))
            nxt.start_ms = cue.end_ms
        elif prev is not None and prev.end_ms - prev.start_ms >= 2:
            cue.start_ms = cue.end_ms - max(1, min(min_ms, (prev.end_ms - prev.start_ms) // 2))
            prev.end_ms = cue.start_ms


def _ssa_file(cues: Sequence[ShapedCue]):
    import pysubs2

    subs = pysubs2.SSAFile()
    for cue in cues:
        event = pysubs2.SSAEvent(start=cue.start_ms, end=cue.end_ms)
        event.plaintext = cue.text
        subs.append(event)
    return subs


def write_srt(cues: Sequence[ShapedCue], path: Path) -> None:
    _ssa_file(cues).save(str(path), encoding="utf-8", format_="srt")


def write_vtt(cues: Sequence[ShapedCue], path: Path) -> None:
    _ssa_file(cues).save(str(path), encoding="utf-8", format_="vtt")


def write_txt(text: str, path: Path) -> None:
    path.write_text(text.strip() + "\n" if text.strip() else "", encoding="utf-8")
