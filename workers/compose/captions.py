"""Captions: read SRT/VTT/ASS with pysubs2, style them for vertical video, write the files ffmpeg reads.

ffmpeg reads the captions from a private temporary directory under fixed names (`captions.ass`,
`captions.srt`), so no user path ever appears inside a filter graph string, where `:`, `,`, `'` and `\\` have
meanings of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BURN_FILE, SOFT_FILE = "captions.ass", "captions.srt"


class BadCaptions(Exception):
    """The file does not parse as SRT, VTT or ASS, or holds no cue."""


@dataclass(frozen=True)
class CaptionStyle:
    font: str
    font_size: int
    margin_v: int
    width: int
    height: int


def caption_style(font: str, width: int, height: int, font_size: int | None, margin_v: int | None) -> CaptionStyle:
    """Defaults scale with the frame: a font of height/24 (80 px at 1920), the line centred in the lower third
    (its middle at 5/6 of the height; a line is about 1.2 font sizes tall)."""
    size = font_size or max(4, round(height / 24))
    margin = margin_v if margin_v is not None else max(0, round(height / 6 - 0.6 * size))
    return CaptionStyle(font, size, margin, width, height)


def load_captions(path: Path):
    """The parsed file (a pysubs2 SSAFile), or BadCaptions saying why."""
    import pysubs2

    try:
        subs = pysubs2.load(str(path), encoding="utf-8-sig")
    except (pysubs2.exceptions.Pysubs2Error, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise BadCaptions(f"does not parse as SRT, VTT or ASS ({type(exc).__name__}: {exc})") from None
    if not [event for event in subs if not event.is_comment and event.plaintext.strip()]:
        raise BadCaptions("holds no caption cue")
    return subs


def _apply_style(subs, style: CaptionStyle) -> None:
    import pysubs2

    outline = max(1.0, round(style.font_size / 12, 1))
    subs.info["PlayResX"], subs.info["PlayResY"] = str(style.width), str(style.height)
    subs.info["ScaledBorderAndShadow"] = "yes"
    side = round(style.width * 0.06)
    subs.styles["Default"] = pysubs2.SSAStyle(
        fontname=style.font, fontsize=style.font_size, bold=True,
        primarycolor=pysubs2.Color(255, 255, 255), outlinecolor=pysubs2.Color(0, 0, 0),
        backcolor=pysubs2.Color(0, 0, 0, 128), outline=outline, shadow=0,
        alignment=pysubs2.Alignment.BOTTOM_CENTER, marginl=side, marginr=side, marginv=style.margin_v)
    for event in subs:
        event.style = "Default"


def write_caption_files(subs, style: CaptionStyle, directory: Path) -> tuple[Path, Path]:
    """(ASS to burn, SRT for the soft track) in `directory`. SRT and VTT cues get the vertical-video style;
    an ASS file keeps the styles its author gave it."""
    if subs.format not in ("ass", "ssa"):
        _apply_style(subs, style)
    burn, soft = directory / BURN_FILE, directory / SOFT_FILE
    subs.save(str(burn), format_="ass", encoding="utf-8")
    subs.save(str(soft), format_="srt", encoding="utf-8")
    return burn, soft
