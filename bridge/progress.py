"""What the console shows while a run goes, fed by the run's events (never by the coordinator directly):

* a terminal: rich progress bars - the whole run, each running step (its worker's progress events), and the
  items of each foreach step - with elapsed time and ETA;
* not a terminal (a log, CI): one plain line per event (report.human_line);
* `--quiet`: failures only (and the final line the runner prints).
"""

from __future__ import annotations

from typing import Any, TextIO

from . import report

Event = dict[str, Any]


class PlainLines:
    def __init__(self, console: TextIO, quiet: bool = False):
        self.console = console
        self.quiet = quiet

    def __call__(self, ev: Event) -> None:
        if self.quiet and ev["event"] not in ("step_failed",):
            return
        line = report.human_line(ev)
        if line:
            self.console.write(line + "\n")
            self.console.flush()

    def expect(self, units: int) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """Bars on a terminal. Units are steps and items; the overall total grows as foreach steps list items."""

    def __init__(self, console: TextIO, steps: int):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.rich_console = Console(file=console)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=self.rich_console, transient=False)
        self.total = steps
        self.overall = self.bars.add_task("run", total=steps)
        self.running: dict[tuple[str, Any], Any] = {}  # (step, item) -> task of a running unit
        self.items: dict[str, Any] = {}  # foreach step -> its items task
        self.bars.start()

    def __call__(self, ev: Event) -> None:
        try:
            self._show(ev)
        except Exception:  # noqa: BLE001 - the display must never stop a run (events.jsonl has it all)
            pass

    def _show(self, ev: Event) -> None:
        e, sid, item = ev["event"], ev.get("step"), ev.get("item")
        if e == "foreach_start":
            self.items[sid] = self.bars.add_task(f"  {sid} items", total=ev["items"])
            self.total += ev["items"] - 1  # the step counts as its items from now on
            self.bars.update(self.overall, total=self.total)
        elif e == "step_start":
            label = sid if item is None else f"{sid}[{item}]"
            self.running[(sid, item)] = self.bars.add_task(f"    {label}", total=1.0)
        elif e == "progress" and (sid, item) in self.running:
            fraction = ev.get("fraction")
            if isinstance(fraction, (int, float)):
                self.bars.update(self.running[(sid, item)], completed=float(fraction))
        elif e in ("step_committed", "step_skipped", "step_failed", "step_interrupted"):
            self._settled(ev, sid, item)
        elif e == "gate_failed" and ev.get("will_regenerate"):
            self._regenerating(sid, ev["regenerates"])
        if e in ("step_failed", "retry_scheduled", "gate_failed", "gate_exhausted"):
            line = report.human_line(ev)
            if line:
                self.bars.console.print(line, markup=False, highlight=False)

    def _settled(self, ev: Event, sid: str, item: Any) -> None:
        task = self.running.pop((sid, item), None)
        if task is not None:
            self.bars.remove_task(task)
        if ev.get("items") is not None or sid in self.items and item is None:
            return  # a foreach step as a whole: its items were counted one by one
        self.bars.advance(self.overall)
        if item is not None and sid in self.items:
            self.bars.advance(self.items[sid])

    def _regenerating(self, check: str, target: str) -> None:
        """A regeneration settles two more units: the regenerated item and its check."""
        self.total += 2
        self.bars.update(self.overall, total=self.total)
        for sid in (check, target):
            if sid in self.items:
                self.bars.update(self.items[sid], total=self._task_total(self.items[sid]) + 1)

    def _task_total(self, task_id: Any) -> float:
        return next(t.total or 0 for t in self.bars.tasks if t.id == task_id)

    def expect(self, units: int) -> None:
        self.total = units
        self.bars.update(self.overall, total=units)

    def close(self) -> None:
        self.bars.stop()


def for_console(console: TextIO | None, quiet: bool, steps: int):
    """The display for this console, or None when there is no console."""
    if console is None:
        return None
    if not quiet and _is_tty(console):
        return RichProgress(console, steps)
    return PlainLines(console, quiet)


def _is_tty(console: TextIO) -> bool:
    try:
        return console.isatty()
    except (AttributeError, ValueError):
        return False
