"""The run report as one self-contained HTML file: inline CSS, a few lines of inline JS, inline SVG, media as
data URIs. Nothing is fetched from anywhere. Every string from the data is escaped (`esc`).

`write_report` gathers the data (events, trace, committed media) and writes the page; `render_page` is pure.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safefs
from .report_media import Thumb, Video, committed_records, contact_sheets, sink_videos
from .report_svg import MARKER_COLOURS, OUTCOME_COLOURS, WARM_STRIPE, esc, timeline_svg
from .report_table import StepRow, step_rows
from .report_timeline import Timeline, build_timeline, read_events
from .state import StateFormatError
from .workdir import Workdir

#: The frame of a thumbnail by its check: passed, failed (or never passed the gate), not checked.
FRAME_COLOURS = {"pass": "#2e9d57", "fail": "#d1343b", "none": "#5b6472"}


class UnknownRun(ValueError):
    """`--run` names a run that events.jsonl does not hold."""


@dataclass
class ReportData:
    workdir: str
    timeline: Timeline
    trace: dict[str, Any] | None
    rows: list[StepRow]
    sheets: dict[str, list[Thumb]]
    videos: list[Video]
    notes: list[str] = field(default_factory=list)


def write_report(root: Path, out: Path, run_id: str | None = None) -> ReportData:
    """Gather one run's data from the workdir and write the page to `out` (atomically)."""
    wd = Workdir(root)
    trace = _read_trace(wd.trace)
    events = read_events(wd.events)
    timeline = build_timeline(events, run_id)
    if run_id and run_id not in timeline.run_ids:
        raise UnknownRun(f"run {run_id} is not in {wd.events} (runs there: {', '.join(timeline.run_ids) or 'none'})")
    notes = []
    if trace and timeline.run_id and trace.get("run_id") != timeline.run_id:
        notes.append(f"the table shows trace.json, which holds run {trace.get('run_id')}, not {timeline.run_id}; "
                     "the contact sheet and the video show the committed outputs as they are now")
    if trace is None:
        notes.append("no trace.json (the runner did not finish): the table is empty, the timeline is from events")
    step_ids = list((trace or {}).get("steps") or {}) or list({str(ev["step"]): 0 for ev in events if ev.get("step")})
    try:
        records = committed_records(wd, step_ids)
    except (StateFormatError, sqlite3.Error) as exc:  # a newer runner's or a damaged database: no media, say why
        records = {}
        notes.append(f"committed outputs unknown: {wd.state_db}: {exc}")
    streams = {str(ev["step"]): str(ev["streaming_from"]) for ev in events
               if ev["event"] == "foreach_start" and ev.get("streaming_from")}
    data = ReportData(str(root), timeline, trace, step_rows(trace or {}), contact_sheets(wd, records, trace, streams),
                      sink_videos(wd, records, out.parent.absolute()), notes)
    # backslashreplace: a lone surrogate (a worker's stderr can carry one into events) must not stop the report
    safefs.replace_file(out, render_page(data).encode("utf-8", "backslashreplace"))
    return data


def _read_trace(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def render_page(d: ReportData) -> str:
    tl, trace = d.timeline, d.trace or {}
    title = f"run {tl.run_id or trace.get('run_id') or '(none)'}"
    body = [f"<h1>{esc(title)}</h1>", _summary(d), *(f'<p class="note">{esc(n)}</p>' for n in d.notes),
            "<h2>Timeline</h2>", _legend(),
            (f'<div class="scroll">{timeline_svg(tl)}</div>' if tl.lanes or tl.markers
             else '<p class="empty">No attempt in this run.</p>'),
            "<h2>Contact sheet</h2>", _sheets(d.sheets), "<h2>Final video</h2>", _videos(d.videos),
            "<h2>Steps</h2>", _table(d.rows)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · storybridge</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><pre id="report-errors" hidden></pre>{"".join(body)}<script>{_JS}</script></body></html>')


def _summary(d: ReportData) -> str:
    # the run_end event of the run shown; without one (a killed runner), its trace.json if it wrote one
    trace = d.trace if d.trace and d.trace.get("run_id") == d.timeline.run_id else {}
    run = d.timeline.end or trace
    facts = [("status", run.get("status", "unfinished")), ("exit code", run.get("exit_code", "-")),
             ("wall", f"{run.get('wall_s') or d.timeline.span_s:.2f} s"), ("attempts", len(d.timeline.bars)),
             ("cache hits", sum(1 for m in d.timeline.markers if m.kind == "cache_hit")), ("workdir", d.workdir)]
    others = [r for r in d.timeline.run_ids if r != d.timeline.run_id]
    if others:
        facts.append(("other runs (--run)", ", ".join(others[-10:])))
    return '<dl class="summary">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"


def _legend() -> str:
    swatches = [(f"attempt {name}", colour) for name, colour in OUTCOME_COLOURS.items()]
    swatches += [("warm process (top stripe)", WARM_STRIPE), ("cache hit", MARKER_COLOURS["cache_hit"]),
                 ("quality gate / regeneration", MARKER_COLOURS["gate"])]
    return ('<p class="legend">' + "".join(f'<span><i style="background:{c}"></i>{esc(n)}</span>' for n, c in swatches)
            + " Hover a bar for its details.</p>")


def _sheets(sheets: dict[str, list[Thumb]]) -> str:
    if not sheets:
        return '<p class="empty">No committed image.</p>'
    parts = []
    for sid, thumbs in sheets.items():
        never = sum(1 for t in thumbs if t.never_passed)
        parts.append(f'<h3>{esc(sid)} <small>{len(thumbs)} image(s)'
                     + (f", {never} never passed the gate" if never else "") + "</small></h3>"
                     '<div class="sheet">' + "".join(_thumb(t) for t in thumbs) + "</div>")
    return "".join(parts)


def _thumb(t: Thumb) -> str:
    check = "fail" if t.never_passed or t.match is False else "pass" if t.match else "none"
    label = t.step if t.item is None else f"{t.step}[{t.item}]"
    lines = [f"{label} {t.name}"]
    if t.score is not None:
        lines.append(f"score {t.score:.3f}" if isinstance(t.score, (int, float)) else f"score {t.score}")
    if t.match is not None:
        lines.append("match" if t.match else "no match")
    if t.verdict:
        lines.append(f"gate: {t.verdict}")
    if t.regenerations:
        lines.append(f"regenerated {t.regenerations}×")
    if t.never_passed:
        lines.append("NEVER PASSED")
    history = "\n".join(f"regeneration {h.get('regeneration')}: value {h.get('value')}, score {h.get('score')}"
                        for h in t.history)
    img = (f'<img src="{esc(t.image.src)}" alt="{esc(label)}">' if t.image.src
           else f'<div class="missing">{esc(t.image.note or "not embedded")}</div>')
    return (f'<figure class="thumb {check}{" never" if t.never_passed else ""}" data-step="{esc(t.step)}" '
            f'data-item="{"" if t.item is None else t.item}" title="{esc(history or t.path)}">{img}'
            f"<figcaption>{'<br>'.join(esc(x) for x in lines)}</figcaption></figure>")


def _videos(videos: list[Video]) -> str:
    if not videos:
        return '<p class="empty">No mp4 among the outputs of the final steps.</p>'
    parts = []
    for v in videos:
        poster = f' poster="{esc(v.poster.src)}"' if v.poster and v.poster.src else ""
        if v.video.src is None:
            parts.append(f'<p class="note">{esc(v.step)}: {esc(v.name)}: {esc(v.video.note)}</p>')
            continue
        note = "" if v.video.embedded else f'<p class="note">{esc(v.video.note)}: <a href="{esc(v.video.src)}">' \
                                            f"{esc(v.video.src)}</a></p>"
        parts.append(f'<figure class="video"><video controls preload="metadata" src="{esc(v.video.src)}"{poster}>'
                     f"</video><figcaption>{esc(v.step)}: {esc(v.name)}</figcaption>{note}</figure>")
    return "".join(parts)


def _table(rows: list[StepRow]) -> str:
    head = ("step", "status", "cache hit", "attempts", "wall s", "peak RSS MB", "devices", "warm", "items", "why")
    body = "".join(
        f'<tr class="{esc(r.status)}" data-step="{esc(r.step)}">' + "".join(f"<td>{esc(c)}</td>" for c in (
            r.step, r.status, r.cache_hit, r.attempts, f"{r.wall_s:.2f}",
            "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}", ", ".join(r.devices) or "-", r.warm, r.items,
            r.why[:300])) + "</tr>" for r in rows)
    return ('<table class="steps"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + f"</tr></thead>"
            f"<tbody>{body}</tbody></table>")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f2a;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e1e3e8}
h3{font-size:14px;margin:14px 0 6px}small{color:#5b6472;font-weight:normal}
dl.summary{display:flex;flex-wrap:wrap;gap:4px 18px;margin:0}dl.summary dt{color:#5b6472}dl.summary dd{margin:0}
.note{color:#8a4b00}.empty{color:#5b6472;font-style:italic}.scroll{overflow-x:auto}
.legend span{margin-right:14px;white-space:nowrap}.legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:-1px}
svg.timeline text{font:11px system-ui,sans-serif}svg.timeline text.bar-label{fill:#fff}
svg.timeline text.lane{font-weight:600}svg.timeline text.tick{fill:#5b6472}
.sheet{display:flex;flex-wrap:wrap;gap:12px}
.thumb{margin:0;width:168px;border:4px solid FRAME_none;padding:0;background:#f3f4f7}
.thumb.pass{border-color:FRAME_pass}.thumb.fail{border-color:FRAME_fail}.thumb.never{border-style:dashed}
.thumb img{display:block;width:168px;height:168px;object-fit:contain;image-rendering:pixelated;background:#fff}
.thumb .missing{height:168px;display:flex;align-items:center;justify-content:center;color:#5b6472}
.thumb figcaption{font-size:12px;padding:4px 6px}
.video video{max-width:360px;max-height:640px;background:#000}
table.steps{border-collapse:collapse}table.steps th,table.steps td{border:1px solid #e1e3e8;padding:3px 8px;
text-align:left;vertical-align:top}table.steps tr.failed td{background:#fdecec}
table.steps tr.cached td{background:#eef3fd}
""".replace("FRAME_none", FRAME_COLOURS["none"]).replace("FRAME_pass", FRAME_COLOURS["pass"]) \
    .replace("FRAME_fail", FRAME_COLOURS["fail"])

# Hand-written: errors of the page itself land in the DOM (a headless test reads them), then "ready".
_JS = """
(function(){var box=document.getElementById('report-errors');
function fail(m){box.hidden=false;box.textContent+=m+'\\n';document.body.dataset.errors=
(+(document.body.dataset.errors||0)+1);}
window.addEventListener('error',function(e){fail('error: '+(e.message||e.type));});
try{document.body.dataset.attempts=document.querySelectorAll('g.attempt').length;
document.body.dataset.ready='1';}catch(e){fail(String(e));}})();
"""
