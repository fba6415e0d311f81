"""The run report's timeline: one run's attempts from `events.jsonl` as bars in lanes, one lane per device.

Pure data in, data out (`build_timeline`); `report_svg` draws it. An attempt is the span from its
`attempt_start` to its `attempt_end` event (to the run's last event when it has none: the runner stopped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The lane of an attempt that names no device (an executor that does not say).
RUNNER_LANE = "runner"


@dataclass
class Bar:
    step: str
    item: int | None
    attempt: int
    start_s: float  # seconds since the run started
    end_s: float
    outcome: str  # ok | retried (failed, then another attempt) | failed | interrupted | unfinished
    warm: bool = False
    regeneration: int = 0  # > 0: an attempt of a quality-gate regeneration
    devices: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        unit = self.step if self.item is None else f"{self.step}[{self.item}]"
        return f"{unit} #{self.attempt}"


@dataclass
class Marker:
    kind: str  # cache_hit | gate (an event of the quality gate: a regeneration, a verdict)
    step: str
    item: int | None
    at_s: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.step if self.item is None else f"{self.step}[{self.item}]"


@dataclass
class Timeline:
    run_id: str | None
    span_s: float
    lanes: dict[str, list[list[Bar]]]  # lane -> rows; bars in one row never overlap
    markers: list[Marker]
    run_ids: list[str]  # every run in the file, oldest first

    @property
    def bars(self) -> list[Bar]:
        """Each attempt once (an attempt on two devices is drawn in both lanes)."""
        seen: dict[tuple, Bar] = {}
        for rows in self.lanes.values():
            for row in rows:
                for bar in row:
                    seen.setdefault((bar.step, bar.item, bar.attempt, bar.start_s), bar)
        return list(seen.values())


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event of `events.jsonl`; a torn last line (a runner killed mid-write) is left out."""
    if not path.is_file():
        return []
    found = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" in record:
                found.append(record)
    return found


def run_ids(events: Iterable[dict[str, Any]]) -> list[str]:
    ordered: dict[str, None] = {}
    for ev in events:
        if ev.get("run_id"):
            ordered.setdefault(str(ev["run_id"]), None)
    return list(ordered)


def build_timeline(events: list[dict[str, Any]], run_id: str | None = None) -> Timeline:
    """The timeline of `run_id` (default: the last run in the file)."""
    ids = run_ids(events)
    run_id = run_id or (ids[-1] if ids else None)
    mine = [ev for ev in events if ev.get("run_id") == run_id]
    if not mine:
        return Timeline(run_id, 0.0, {}, [], ids)
    t0 = min(float(ev.get("ts", 0)) for ev in mine)
    last = max(float(ev.get("ts", 0)) for ev in mine) - t0
    bars = _bars(mine, t0, last)
    markers = _markers(mine, t0)
    span = max([last, *(b.end_s for b in bars), *(m.at_s for m in markers)], default=0.0)
    return Timeline(run_id, span, _lanes(bars), markers, ids)


def _unit(ev: dict[str, Any]) -> tuple[str, int | None]:
    item = ev.get("item")
    return str(ev.get("step")), None if item is None else int(item)


def _bars(events: list[dict[str, Any]], t0: float, last_s: float) -> list[Bar]:
    starts: dict[tuple, dict[str, Any]] = {}
    ends: dict[tuple, dict[str, Any]] = {}
    for ev in events:
        if ev["event"] in ("attempt_start", "attempt_end"):
            key = (*_unit(ev), int(ev.get("attempt") or 0))
            (starts if ev["event"] == "attempt_start" else ends)[key] = ev
    retried_units = {_unit(ev) + (int(ev.get("attempt") or 0),) for ev in events if ev["event"] == "retry_scheduled"}
    bars = []
    for key, start in starts.items():
        end = ends.get(key)
        begin = float(start["ts"]) - t0
        outcome = _outcome(end, key in retried_units or (key[0], key[1], key[2] + 1) in starts)
        details = {k: v for k, v in (end or start).items() if k not in ("event", "run_id", "argv", "staging_dir")}
        bars.append(Bar(step=key[0], item=key[1], attempt=key[2], start_s=begin,
                        end_s=max(begin, float(end["ts"]) - t0 if end else last_s), outcome=outcome,
                        warm=bool(end and end.get("warm")), regeneration=int(start.get("regeneration") or 0),
                        devices=[str(d) for d in (start.get("devices") or [])], details=details))
    return sorted(bars, key=lambda b: (b.start_s, b.step, b.item or 0))


def _outcome(end: dict[str, Any] | None, another_attempt: bool) -> str:
    if end is None:
        return "unfinished"
    status = end.get("status")
    if status == "committed":
        return "ok"
    if status == "interrupted":
        return "interrupted"
    return "retried" if another_attempt else "failed"


def _markers(events: list[dict[str, Any]], t0: float) -> list[Marker]:
    found = []
    for ev in events:
        name = str(ev["event"])
        if name == "step_skipped" and ev.get("cache_hit"):
            kind = "cache_hit"
        elif "regenerat" in name or name.startswith("gate"):  # the quality gate's events, whatever their names
            kind = "gate"
        else:
            continue
        found.append(Marker(kind, *_unit(ev), at_s=float(ev["ts"]) - t0,
                            details={k: v for k, v in ev.items() if k not in ("run_id", "key")}))
    return found


def _lanes(bars: list[Bar]) -> dict[str, list[list[Bar]]]:
    """Bars by device, packed into rows first-fit, so that concurrent attempts on one device stack up."""
    lanes: dict[str, list[list[Bar]]] = {}
    for bar in bars:
        for device in bar.devices or [RUNNER_LANE]:
            rows = lanes.setdefault(device, [])
            row = next((r for r in rows if r[-1].end_s <= bar.start_s), None)
            if row is None:
                rows.append([bar])
            else:
                row.append(bar)
    return dict(sorted(lanes.items(), key=lambda kv: _lane_order(kv[0])))


def _lane_order(name: str) -> tuple[int, str]:
    """cpu first, then cuda:0, cuda:1, ... in number order, then anything else."""
    if name == "cpu":
        return (0, "")
    if name.startswith("cuda:") and name[5:].isdigit():
        return (1, f"{int(name[5:]):06d}")
    return (2, name)
