"""The run report's media: committed images (for the contact sheet) and the sink steps' videos.

Committed outputs and results come from `state.db`, read through an in-memory copy (`StateDB(snapshot=True)`,
no lock, nothing written), so a report can be made while a run goes on. Only regular files inside the workdir
are read; each is embedded as a data URI (images as thumbnails when Pillow is importable), or linked by a path
relative to the HTML file when it is too big.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safefs
from .execute import final_dir
from .state import WHOLE_STEP, StateDB, StepRecord
from .workdir import Workdir

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
VIDEO_TYPES = {".mp4": "video/mp4"}
THUMB_SIDE_PX = 320
#: An image embedded as it is (no Pillow) up to this size; a bigger one is linked.
IMAGE_EMBED_CAP_BYTES = 8 << 20
VIDEO_EMBED_CAP_BYTES = 48 << 20

Records = dict[str, dict[int, StepRecord]]  # step -> item (WHOLE_STEP for a whole step) -> committed record


@dataclass
class Embedded:
    src: str | None  # a data URI, a relative link, or None (unreadable)
    embedded: bool
    size_bytes: int = 0
    note: str = ""


@dataclass
class Thumb:
    step: str
    item: int | None
    name: str
    path: str
    image: Embedded
    score: float | None = None
    match: bool | None = None
    regenerations: int = 0
    verdict: str | None = None  # the quality gate's: passed | exhausted | unchecked
    history: list[dict[str, Any]] = field(default_factory=list)
    never_passed: bool = False


@dataclass
class Video:
    step: str
    name: str
    video: Embedded
    poster: Embedded | None = None


def committed_records(wd: Workdir, step_ids: list[str]) -> Records:
    """The committed record of every unit of these steps, with its result loaded; {} without a state.db."""
    if not wd.state_db.is_file():
        return {}
    state = StateDB(wd.state_db, wd.results, snapshot=True)
    try:
        found: Records = {}
        for sid in step_ids:
            units = {WHOLE_STEP: rec} if (rec := state.step(sid)) else {}
            units.update(state.step_items(sid))
            for item, rec in units.items():
                if rec.committed and state.load_result(rec) is None:
                    found.setdefault(sid, {})[item] = rec
        return found
    finally:
        state.close()


def _outputs_of(wd: Workdir, rec: StepRecord, types: dict[str, str]) -> list[tuple[str, Path]]:
    """(recorded path, where the file is now) of the record's outputs of these types. A workdir that was moved
    or copied still names the old place in its records: its files are looked up under this workdir's
    `steps/ID[/N]`, at the same place relative to the committed directory."""
    here = final_dir(wd, rec.step_id, rec.item)
    found = []
    for out in rec.outputs:
        path = str(out.get("path", "")) if isinstance(out, dict) else ""
        if Path(path).suffix.lower() not in types:
            continue
        inside = os.path.relpath(path, rec.committed_dir) if rec.committed_dir else ""
        moved = inside and not inside.startswith("..") and not os.path.isabs(inside)
        found.append((path, here / inside if moved else Path(path)))
    return found


def contact_sheets(wd: Workdir, records: Records, trace: dict[str, Any] | None,
                   streams: dict[str, str] | None = None) -> dict[str, list[Thumb]]:
    """Step -> its committed images in item order, with check scores and the quality gate's verdicts.

    `streams`: foreach step -> the foreach step it streams from (`foreach_start` events); a check that names no
    image path scores item i of its source by its own item i."""
    scores = _scores_by_path(records)
    by_item = _scores_by_stream(records, streams or {})
    steps = (trace or {}).get("steps") or {}
    never = (trace or {}).get("gate_never_passed") or {}
    sheets: dict[str, list[Thumb]] = {}
    for sid, units in records.items():
        gate_items = {it.get("item"): it for it in (steps.get(sid) or {}).get("items") or [] if isinstance(it, dict)}
        for item in sorted(units):
            for recorded, path in _outputs_of(wd, units[item], IMAGE_TYPES):
                unit_item = None if item == WHOLE_STEP else item
                thumb = Thumb(sid, unit_item, path.name, str(path), embed_image(wd.root, path))
                thumb.score, thumb.match = (scores.get(os.path.normpath(recorded))
                                            or by_item.get((sid, item), (None, None)))
                _apply_gate(thumb, gate_items.get(unit_item) or {}, unit_item in (never.get(sid) or []))
                sheets.setdefault(sid, []).append(thumb)
    return sheets


def _apply_gate(thumb: Thumb, item_trace: dict[str, Any], never_passed: bool) -> None:
    """The quality gate's fields of this item in trace.json (when a gate ran): they win over a check's score."""
    gate = item_trace.get("gate") if isinstance(item_trace.get("gate"), dict) else {}
    thumb.regenerations = int(item_trace.get("regenerations") or 0)
    thumb.verdict = gate.get("verdict")
    thumb.history = [h for h in gate.get("history") or [] if isinstance(h, dict)]
    if thumb.history:
        last = thumb.history[-1]
        thumb.score = last.get("score", thumb.score)
        thumb.match = last.get("value") if isinstance(last.get("value"), bool) else thumb.match
    thumb.never_passed = never_passed or thumb.verdict == "exhausted"


def _checked(rec: StepRecord) -> list[dict[str, Any]]:
    """The entries of a result shaped like the vision worker's (`items: [{path, score, match}, ...]`) that
    carry a score or a match."""
    items = rec.result.get("items") if isinstance(rec.result, dict) else None
    return [it for it in items if isinstance(it, dict) and ("score" in it or "match" in it)] \
        if isinstance(items, list) else []


def _scores_by_path(records: Records) -> dict[str, tuple[float | None, bool | None]]:
    """Image path -> (score, match) from any committed result that checked images by path."""
    return {os.path.normpath(it["path"]): (it.get("score"), it.get("match"))
            for units in records.values() for rec in units.values() for it in _checked(rec)
            if isinstance(it.get("path"), str)}


def _scores_by_stream(records: Records, streams: dict[str, str]) -> dict[tuple[str, int], tuple[Any, Any]]:
    """(source step, item) -> (score, match) of the first checked entry of the streaming step's item."""
    found: dict[tuple[str, int], tuple[Any, Any]] = {}
    for check, source in streams.items():
        for item, rec in (records.get(check) or {}).items():
            if (entries := _checked(rec)) and item != WHOLE_STEP:
                found.setdefault((source, item), (entries[0].get("score"), entries[0].get("match")))
    return found


def sink_videos(wd: Workdir, records: Records, html_dir: Path, cap_bytes: int = VIDEO_EMBED_CAP_BYTES) -> list[Video]:
    """The mp4 outputs of the steps no other step depends on (by the committed cache keys' upstream)."""
    needed = {name.split("[", 1)[0] for units in records.values() for rec in units.values()
              for name in ((rec.components or {}).get("upstream") or {})}
    videos = []
    for sid, units in records.items():
        if sid in needed:
            continue
        for item in sorted(units):
            rec = units[item]
            posters = [p for _, p in _outputs_of(wd, rec, IMAGE_TYPES) if "poster" in p.stem.lower()]
            for _, path in _outputs_of(wd, rec, VIDEO_TYPES):
                poster = embed_image(wd.root, posters[0]) if posters else None
                videos.append(Video(sid, path.name, embed_file(wd.root, path, html_dir, cap_bytes), poster))
    return videos


def _read_inside(root: Path, path: Path, limit: int) -> tuple[bytes | None, int, str]:
    """(bytes or None when over `limit`, size, note) of a regular file inside `root`; (None, 0, why) otherwise."""
    try:
        if not path.resolve().is_relative_to(root.resolve()):
            return None, 0, "outside the workdir: not read"
        opened = safefs.open_regular_for_reading(path)
    except OSError as exc:
        return None, 0, f"unreadable: {exc.strerror or exc}"
    if opened is None:
        return None, 0, "not a regular file"
    fd, st = opened
    with os.fdopen(fd, "rb") as f:
        return (f.read() if st.st_size <= limit else None), st.st_size, ""


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def embed_file(root: Path, path: Path, html_dir: Path, cap_bytes: int) -> Embedded:
    data, size, note = _read_inside(root, path, cap_bytes)
    if note:
        return Embedded(None, False, 0, note)
    if data is None:
        return Embedded(os.path.relpath(path, html_dir), False, size,
                        f"{size / 2**20:.1f} MiB, over the {cap_bytes / 2**20:.0f} MiB embedding cap: linked")
    mime = {**IMAGE_TYPES, **VIDEO_TYPES}.get(path.suffix.lower(), "application/octet-stream")
    return Embedded(_data_uri(mime, data), True, size)


def embed_image(root: Path, path: Path) -> Embedded:
    """A thumbnail (Pillow, when importable) or the image as it is."""
    data, size, note = _read_inside(root, path, 4 * IMAGE_EMBED_CAP_BYTES)
    if note or data is None:
        return Embedded(None, False, size, note or "too big to read for a thumbnail")
    thumb = _thumbnail(data)
    if thumb is not None:
        return Embedded(_data_uri(*thumb), True, size)
    if size > IMAGE_EMBED_CAP_BYTES:
        return Embedded(None, False, size, "too big to embed without Pillow")
    return Embedded(_data_uri(IMAGE_TYPES[path.suffix.lower()], data), True, size)


def _thumbnail(data: bytes) -> tuple[str, bytes] | None:
    """(mime, bytes) of a thumbnail, or None without Pillow or for an image it cannot read."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((THUMB_SIDE_PX, THUMB_SIDE_PX))
            out = io.BytesIO()
            if im.mode in ("RGB", "L"):
                im.save(out, "JPEG", quality=85)
                return "image/jpeg", out.getvalue()
            im.save(out, "PNG")
            return "image/png", out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
