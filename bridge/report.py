"""What a run tells people: per-step trace records, trace.json, one human line per event, the summary table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import safefs


@dataclass
class StepTrace:
    # a bridge.states.State value: committed | cached | failed | skipped | interrupted | not_selected once
    # settled; pending, waiting or running before (an uncaught exception turns those into failed or
    # interrupted). For a foreach step, `items` holds one StepTrace per item.
    status: str = "pending"
    reason: str = ""
    cache_hit: bool = False
    cache_key: str | None = None
    optional: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    error: dict[str, Any] | None = None
    items: dict[int, StepTrace] | None = None
    # an item a quality gate regenerates: its regeneration number, and {step, verdict, history} (gate_keeper)
    regenerations: int | None = None
    gate: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = self._fields()
        if self.items is not None:
            doc["items"] = [{"item": i, **self.items[i]._fields()} for i in sorted(self.items)]
        return doc

    def _fields(self) -> dict[str, Any]:
        doc = {"status": str(self.status), "reason": self.reason, "cache_hit": self.cache_hit,
               "cache_key": self.cache_key, "optional": self.optional, "wall_s": self.wall_s,
               "peak_rss_mb": max((a["peak_rss_mb"] or 0 for a in self.attempts), default=None),
               "error": self.error, "attempts": self.attempts}
        if self.gate is not None:
            doc.update(regenerations=self.regenerations or 0, gate=self.gate)
        return doc


def status_counts(trace: dict[str, StepTrace]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tr in trace.values():
        counts[tr.status] = counts.get(tr.status, 0) + 1
    return counts


def write_trace(path: Path, doc: dict[str, Any]) -> None:
    """Atomically (temporary file + rename), never through a link planted as trace.json or its temp file."""
    safefs.replace_file(path, json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8", "backslashreplace"))


def human_line(ev: dict[str, Any]) -> str | None:
    """The console line for an event, or None for events the console does not show."""
    e, sid = ev["event"], ev.get("step")
    if ev.get("item") is not None:
        sid = f"{sid}[{ev['item']}]"
    if e == "step_start":
        return f"▶ {sid} ({ev['worker']}): {ev['reason']}"
    if e == "step_skipped":
        return f"↷ {sid} skipped: {ev['reason']}"
    if e == "retry_scheduled":
        return f"↻ {sid} attempt {ev['attempt']} failed ({ev['error_kind']}); retry in {ev['delay_s']:g} s"
    if e == "step_committed":
        if ev.get("items") is not None:
            return f"✓ {sid} committed: {ev['items']} item(s)"
        return f"✓ {sid} committed after {ev['attempts']} attempt(s)"
    if e == "foreach_start":
        return f"⇉ {sid}: {ev['items']} item(s)" + (f", streaming from {ev['streaming_from']}" if ev.get("streaming_from") else "")
    if e == "step_failed":
        return f"✗ {sid} failed ({ev.get('kind')}): {str(ev.get('message', ''))[:300]}"
    if e == "step_interrupted":
        return f"■ {sid} interrupted"
    if e == "gate_failed":
        return (f"⟲ {sid} gate: {ev['regenerates']}[{ev['item']}] candidate {ev['regeneration']} failed "
                f"(value {ev['value']!r}, score {ev['score']!r})")
    if e == "gate_exhausted":
        return (f"⚠ {ev['regenerates']}[{ev['item']}] never passed {ev['step']} after {ev['regeneration']} "
                f"regeneration(s): " + ("the item fails" if ev["on_exhausted"] == "fail" else "the last candidate stands"))
    return None


def print_summary(console: TextIO, title: str, rows: list[tuple[str, str, StepTrace]]) -> None:
    """A table of (step, worker, trace): plain text when the console is not a terminal, colour on a TTY."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False)
    for column, justify in (("step", "left"), ("worker", "left"), ("status", "left"), ("attempts", "right"),
                            ("wall s", "right"), ("why", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for sid, worker, tr in rows:
        why = (tr.error or {}).get("message") or tr.reason
        if tr.items:
            failed = [i for i, t in sorted(tr.items.items()) if t.status in ("failed", "skipped", "interrupted")]
            why = f"{len(tr.items)} items" + (f"; without result: {failed[:20]}" if failed else "")
            never = [i for i, t in sorted(tr.items.items()) if (t.gate or {}).get("verdict") == "exhausted"]
            regenerated = sum(t.regenerations or 0 for t in tr.items.values())
            if regenerated or never:
                why += f"; {regenerated} regeneration(s)" + (f"; never passed the gate: {never[:20]}" if never else "")
        attempts = sum(len(t.attempts) for t in tr.items.values()) if tr.items else len(tr.attempts)
        table.add_row(sid, worker, str(tr.status), str(attempts), f"{tr.wall_s:.2f}", str(why)[:160])
    Console(file=console, width=120 if not console.isatty() else None, highlight=False).print(table)
