"""Timing a known script (a story's scenes) against the words Whisper heard.

The narration's text is known in advance (the story file), so there is no need to guess scene boundaries from
pauses: the script's words are matched to the recognised words (difflib, on normalised spellings), each script
word gets a time (its matched word's, or one interpolated between matched neighbours), and each part's range
runs from the middle of the pause before it to the middle of the pause after it. The parts tile the audio from
0 to its end, so a video cut on them lasts exactly as long as the narration.

Pure Python: reading and checking the file happens before any model import.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.runtime import InvalidInput

from .contract import ScriptPart as ScriptPartResult

#: A part never gets less than this, so every scene can still become a clip of at least a few frames.
MIN_PART_DURATION_S = 0.25
#: Below this share of matched script words the timings are mostly interpolated: say so.
LOW_MATCH_RATIO = 0.5
MAX_PARTS = 256

_WORD = re.compile(r"[\w']+", re.UNICODE)


@dataclass(frozen=True)
class ScriptPart:
    text: str
    data: dict[str, Any] | None  # the part's object in a JSON script, as given


@dataclass(frozen=True)
class PartTiming:
    start_s: float
    end_s: float
    spoken_start_s: float
    spoken_end_s: float
    matched_words: int
    total_words: int


def normalise_words(text: str) -> list[str]:
    return [w.strip("'").lower() for w in _WORD.findall(text) if w.strip("'")]


def _bad(message: str, detail: str) -> InvalidInput:
    return InvalidInput.for_field("script_path", message, type_="bad_script", detail=detail)


def read_script(path: Path, text_field: str) -> list[ScriptPart]:
    """Parts from a `.txt` (one per non-empty line) or `.json` file (strings, objects, or `{"scenes": [...]}`)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"script_path {str(path)!r} is not UTF-8 text: {exc}", "not utf-8") from None
    if path.suffix.lower() == ".json":
        parts = _json_parts(path, raw, text_field)
    else:
        parts = [ScriptPart(line.strip(), None) for line in raw.splitlines() if line.strip()]
    if not parts:
        raise _bad(f"script_path {str(path)!r} holds no text parts", "empty")
    if len(parts) > MAX_PARTS:
        raise _bad(f"script_path {str(path)!r} has {len(parts)} parts; at most {MAX_PARTS}", "too many parts")
    for i, part in enumerate(parts):
        if not normalise_words(part.text):
            raise _bad(f"script part {i} of {str(path)!r} has no words", f"part {i} has no words")
    return parts


def _json_parts(path: Path, raw: str, text_field: str) -> list[ScriptPart]:
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(f"script_path {str(path)!r} is not valid JSON: {exc}", "bad json") from None
    items = doc.get("scenes") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise _bad(f"script_path {str(path)!r} must hold a list of parts, or an object with a `scenes` list",
                   "no list")
    parts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            parts.append(ScriptPart(item.strip(), None))
        elif isinstance(item, dict) and isinstance(item.get(text_field), str):
            parts.append(ScriptPart(item[text_field].strip(), item))
        else:
            raise _bad(f"script part {i} of {str(path)!r} must be a string or an object with a string "
                       f"{text_field!r} field (script_text_field)", f"part {i} has no {text_field!r}")
    return parts


def _word_times(script_words: list[str], heard: list[tuple[str, float, float]],
                duration_s: float) -> tuple[list[tuple[float, float]], list[bool]]:
    """A (start, end) per script word: its matched heard word's, else interpolated by position."""
    matcher = difflib.SequenceMatcher(None, script_words, [w for w, _, _ in heard], autojunk=False)
    times: list[tuple[float, float] | None] = [None] * len(script_words)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            _, start, end = heard[block.b + k]
            times[block.a + k] = (start, end)
    matched = [t is not None for t in times]
    anchors = [(-1, (0.0, 0.0))] + [(i, t) for i, t in enumerate(times) if t is not None] \
        + [(len(times), (duration_s, duration_s))]
    for (i0, (_, end0)), (i1, (start1, _)) in zip(anchors, anchors[1:], strict=False):
        gap = i1 - i0
        for j in range(i0 + 1, i1):  # unmatched words share the time between their matched neighbours evenly
            times[j] = (end0 + (start1 - end0) * (j - i0 - 1) / gap, end0 + (start1 - end0) * (j - i0) / gap)
    return [t for t in times if t is not None], matched


def align(parts: list[ScriptPart], heard: list[tuple[str, float, float]], duration_s: float) -> list[PartTiming]:
    """Time ranges that tile [0, duration_s], one per part, from the heard words (text, start_s, end_s)."""
    words_per_part = [normalise_words(p.text) for p in parts]
    script_words = [w for words in words_per_part for w in words]
    heard_norm = [(n, s, e) for text, s, e in heard for n in normalise_words(text)]
    times, matched = _word_times(script_words, heard_norm, duration_s)
    spans, first = [], 0
    for words in words_per_part:
        last = first + len(words)
        spans.append((times[first][0], times[last - 1][1], sum(matched[first:last]), len(words)))
        first = last
    bounds = [0.0] + [(max(prev[1], prev[0]) + max(nxt[0], prev[1])) / 2 for prev, nxt in zip(spans, spans[1:], strict=False)]
    bounds = _spread(bounds + [duration_s], duration_s)
    return [PartTiming(round(b0, 3), round(b1, 3), round(s[0], 3), round(s[1], 3), s[2], s[3])
            for b0, b1, s in zip(bounds, bounds[1:], spans, strict=False)]


def _spread(bounds: list[float], duration_s: float) -> list[float]:
    """Non-decreasing bounds with every part at least MIN_PART_DURATION_S long (when the audio allows)."""
    n = len(bounds) - 1
    gap = min(MIN_PART_DURATION_S, duration_s / n)
    out = [0.0]
    for b in bounds[1:-1]:
        out.append(max(b, out[-1] + gap))
    out.append(duration_s)
    for i in range(n - 1, 0, -1):  # pushed past the end: pull back from the end
        out[i] = min(out[i], out[i + 1] - gap)
    return out


def match_ratio(timings: list[PartTiming]) -> float:
    total = sum(t.total_words for t in timings)
    return sum(t.matched_words for t in timings) / total if total else 0.0


def timed_script(parts: list[ScriptPart], heard: list[tuple[str, float, float]],
                 duration_s: float) -> tuple[list[ScriptPartResult], float]:
    """The result's `script` entries and the share of script words that were heard."""
    timings = align(parts, heard, duration_s)
    entries = [ScriptPartResult(index=i, text=p.text, start_s=t.start_s, end_s=t.end_s,
                                duration_s=round(t.end_s - t.start_s, 3), spoken_start_s=t.spoken_start_s,
                                spoken_end_s=t.spoken_end_s, matched_words=t.matched_words,
                                total_words=t.total_words, data=p.data)
               for i, (p, t) in enumerate(zip(parts, timings, strict=True))]
    return entries, round(match_ratio(timings), 4)
