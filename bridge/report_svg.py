"""The timeline drawn as inline SVG: lanes of attempt bars, marker lanes, a time axis in seconds.

Every string from the data goes through `esc` (a step id, an error message in a hover title).
"""

from __future__ import annotations

import math
from html import escape

from .report_timeline import Bar, Marker, Timeline

#: Bar colours by outcome; the page's legend and the tests read them from here.
OUTCOME_COLOURS = {"ok": "#2e9d57", "retried": "#e8a317", "failed": "#d1343b", "interrupted": "#8a8f98",
                   "unfinished": "#b7bcc6"}
MARKER_COLOURS = {"cache_hit": "#3b6fd8", "gate": "#8e44ad"}
WARM_STRIPE = "#1b1f2a"

LABEL_W, PLOT_W, ROW_H, BAR_H, AXIS_H, GAP = 120, 960, 22, 16, 26, 8
MIN_BAR_W = 4.0
CHAR_W = 6.4  # about one character of the 11 px label font, to decide whether a label fits in its bar


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def timeline_svg(tl: Timeline) -> str:
    scale = PLOT_W / max(tl.span_s, 1e-3)
    parts: list[str] = []
    y = AXIS_H
    for lane, rows in tl.lanes.items():
        parts.append(_lane_header(lane, y, len(rows)))
        for r, row in enumerate(rows):
            parts.extend(_bar(bar, y + r * ROW_H, scale) for bar in row)
        y += len(rows) * ROW_H + GAP
    for kind, title in (("cache_hit", "cache hits"), ("gate", "quality gate")):
        markers = [m for m in tl.markers if m.kind == kind]
        if markers:
            parts.append(_lane_header(title, y, 1))
            parts.extend(_marker(m, y, scale) for m in markers)
            y += ROW_H + GAP
    width, height = LABEL_W + PLOT_W + 20, y + 4
    return (f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" shape-rendering="crispEdges" role="img" '
            f'aria-label="attempts over time, one lane per device">'
            + _axis(tl.span_s, scale, height) + "".join(parts) + "</svg>")


def _lane_header(name: str, y: int, rows: int) -> str:
    h = rows * ROW_H
    return (f'<rect x="0" y="{y - 2}" width="{LABEL_W + PLOT_W}" height="{h}" fill="#f3f4f7"/>'
            f'<text class="lane" x="6" y="{y + 14}">{esc(name)}</text>')


def _bar(bar: Bar, y: int, scale: float) -> str:
    x = LABEL_W + bar.start_s * scale
    w = max(MIN_BAR_W, (bar.end_s - bar.start_s) * scale - 1)  # a few milliseconds still show; 1 px apart
    colour = OUTCOME_COLOURS.get(bar.outcome, OUTCOME_COLOURS["unfinished"])
    label = _label(bar) + (" warm" if bar.warm else "")
    text = (f'<text class="bar-label" x="{x + 3:.1f}" y="{y + 12}">{esc(label)}</text>'
            if len(label) * CHAR_W < w - 4 else "")
    stripe = (f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="3" fill="{WARM_STRIPE}"/>' if bar.warm else "")
    regen = (f'<rect x="{x:.1f}" y="{y}" width="3" height="{BAR_H}" fill="{MARKER_COLOURS["gate"]}"/>'
             if bar.regeneration else "")
    return (f'<g class="attempt {esc(bar.outcome)}" data-step="{esc(bar.step)}" '
            f'data-item="{"" if bar.item is None else bar.item}" data-attempt="{bar.attempt}" '
            f'data-outcome="{esc(bar.outcome)}" data-warm="{int(bar.warm)}">'
            f'<title>{esc(_bar_title(bar))}</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{colour}"/>'
            f"{stripe}{regen}{text}</g>")


def _label(bar: Bar) -> str:
    """`step[item] #attempt`, and `↻r` for an attempt of regeneration r."""
    return bar.label + (f" ↻{bar.regeneration}" if bar.regeneration else "")


def _bar_title(bar: Bar) -> str:
    d = bar.details
    lines = [f"{_label(bar)}: {bar.outcome}", f"{bar.start_s:.2f} s → {bar.end_s:.2f} s "
             f"({bar.end_s - bar.start_s:.2f} s)", f"devices: {', '.join(bar.devices) or '-'}"
             + ("; warm process" if bar.warm else "")]
    if bar.regeneration:
        lines.append(f"regeneration {bar.regeneration}")
    for key in ("exit_code", "error_kind", "message", "peak_rss_mb", "queue_wait_s"):
        if d.get(key) not in (None, ""):
            lines.append(f"{key}: {d[key]}")
    return "\n".join(lines)


def _marker(m: Marker, y: int, scale: float) -> str:
    x, cy, r = LABEL_W + m.at_s * scale, y + BAR_H / 2, 6
    colour = MARKER_COLOURS.get(m.kind, MARKER_COLOURS["gate"])
    if m.kind == "cache_hit":
        reason = str(m.details.get("reason") or "cache hit")
    else:  # gate_failed / gate_exhausted: the candidate it judged and what happens next
        reason = f"{m.details.get('event')} " + ", ".join(f"{k} {m.details[k]}" for k in _GATE_FIELDS if k in m.details)
    return (f'<g class="marker {esc(m.kind)}" data-step="{esc(m.step)}" '
            f'data-item="{"" if m.item is None else m.item}">'
            f'<title>{esc(f"{m.label}: {reason} at {m.at_s:.2f} s")}</title>'
            f'<polygon points="{x:.1f},{cy - r} {x + r:.1f},{cy} {x:.1f},{cy + r} {x - r:.1f},{cy}" '
            f'fill="{colour}"/></g>')


_GATE_FIELDS = ("regenerates", "regeneration", "value", "score", "will_regenerate", "on_exhausted")


def _axis(span_s: float, scale: float, height: int) -> str:
    step = _tick_step(span_s)
    parts = []
    for i in range(int(span_s / step) + 1):
        t = i * step
        x = LABEL_W + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{height}" stroke="#e1e3e8"/>'
                     f'<text class="tick" x="{x + 2:.1f}" y="{AXIS_H - 10}">{t:g} s</text>')
    return "".join(parts)


def _tick_step(span_s: float) -> float:
    """1, 2 or 5 times a power of ten, for about 8 ticks."""
    raw = max(span_s, 1e-3) / 8
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
