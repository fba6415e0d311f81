"""The run report's per-step table, from `trace.json`: one row per step, a foreach step's items summed up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Item statuses that mean "produced no result" (bridge.states).
_WITHOUT_RESULT = ("failed", "skipped", "interrupted")


@dataclass
class StepRow:
    step: str
    status: str
    cache_hit: str
    attempts: int
    wall_s: float
    peak_rss_mb: float | None
    devices: list[str]
    warm: str
    items: str
    why: str


def step_rows(trace: dict[str, Any]) -> list[StepRow]:
    rows = []
    for sid, step in (trace.get("steps") or {}).items():
        if not isinstance(step, dict):
            continue
        items = [it for it in step.get("items") or [] if isinstance(it, dict)]
        units = items or [step]
        attempts = [a for u in units for a in u.get("attempts") or [] if isinstance(a, dict)]
        peaks = [p for p in [step.get("peak_rss_mb"), *(u.get("peak_rss_mb") for u in units)]
                 if isinstance(p, (int, float))]
        devices = sorted({str(d) for a in attempts for d in a.get("devices") or []})
        hits = sum(1 for u in units if u.get("cache_hit"))
        warm = sum(1 for a in attempts if a.get("warm"))
        rows.append(StepRow(
            step=str(sid), status=str(step.get("status", "")),
            cache_hit=(f"{hits}/{len(items)} items" if items else ("yes" if hits else "no")),
            attempts=len(attempts), wall_s=float(step.get("wall_s") or 0.0), peak_rss_mb=max(peaks, default=None),
            devices=devices, warm=f"{warm}/{len(attempts)}" if attempts else "-",
            items=_items_cell(items), why=_why(step, items)))
    return rows


def _items_cell(items: list[dict[str, Any]]) -> str:
    if not items:
        return "-"
    failed = sum(1 for it in items if it.get("status") in _WITHOUT_RESULT)
    return f"{len(items) - failed} ok / {failed} failed"


def _why(step: dict[str, Any], items: list[dict[str, Any]]) -> str:
    error = step.get("error") if isinstance(step.get("error"), dict) else {}
    if error.get("message"):
        return str(error["message"])
    without = [it.get("item") for it in items if it.get("status") in _WITHOUT_RESULT]
    if without:
        return f"without result: items {without[:20]}"
    return str(step.get("reason", ""))
