"""Foreach steps inside the coordinator: turning a step's list into item nodes, and settling the step once
every item has settled. Items are units of their own (key, attempts, commit into steps/ID/N); see fanout.py
for the argument syntax and streaming.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from . import fanout, refs, safefs
from .item_reuse import ItemReuse
from .report import StepTrace
from .states import Action, State, unit_label

if TYPE_CHECKING:
    from .coordinator import Coordinator


class ForeachSteps:
    def __init__(self, coordinator: Coordinator):
        self.co = coordinator
        self.chosen: set[str] = set()
        self.counts: dict[str, int] = {}
        self.values: dict[str, list[Any]] = {}  # the items of a step that does not stream
        # a streaming step: the name of its streamed list, and its other lists (a zipped step's), resolved
        self.streamed: dict[str, tuple[str, dict[str, list[Any]]]] = {}
        self.expanded_at: dict[str, float] = {}
        self.reuse = ItemReuse(coordinator.ctx.wd, coordinator.ctx.state)

    def value(self, sid: str, item: int) -> Any:
        """What `${item}` stands for in item `item` of `sid`."""
        source = self.co.ctx.m.stream_from.get(sid)
        if source is None:
            return self.values[sid][item]
        name, others = self.streamed[sid]
        upstream = self.co.planner.item_results.get(unit_label(source, item))
        return fanout.item_at(self.co.ctx.m.steps[sid].foreach, others, item, (name, upstream))

    def expand(self, sid: str) -> None:
        co, planner = self.co, self.co.planner
        source = co.ctx.m.stream_from.get(sid)
        blocked = planner.blocked(sid, planner.unit_deps(sid) + ([source] if source in planner.failed else []))
        if blocked is not None:
            self._settle_early(sid, blocked)
            return
        try:
            count = self._list_items(sid, source)
        except refs.RefError as exc:
            from .planner import Decision

            self._settle_early(sid, Decision(sid, Action.FAIL, f"reference cannot be resolved: {exc}",
                                             kind="invalid_reference"))
            return
        self._prepare_workdir(sid, count)
        self.counts[sid] = count
        self.expanded_at[sid] = time.monotonic()
        self._step_trace(sid)
        co.ctx.events.emit("foreach_start", step=sid, items=count, streaming_from=source)
        for i in range(count):
            waits = ([("item", source, i)] if source in self.chosen else []) + co.gates.item_waits(sid, i)
            co.scheduler.add(("item", sid, i), waits, co.priority(sid, i))
        co.scheduler.add(("step", sid), [("item", sid, i) for i in range(count)] + co.gates.step_waits(sid, count),
                         co.priority(sid, count))
        co.scheduler.done(("expand", sid))  # a step streaming from this one can list its items now

    def _list_items(self, sid: str, source: str | None) -> int:
        """Resolve what `sid` runs over and return how many items; a streaming step knows its source's count
        (and, zipped, resolves its other lists, which must have that length). Raises RefError."""
        planner = self.co.planner
        if source is None:
            self.values[sid] = planner.foreach_list(sid)
            return len(self.values[sid])
        foreach = self.co.ctx.m.steps[sid].foreach
        name = fanout.streamed_name(foreach, {source})  # the one list that is exactly `${steps.SOURCE.result}`
        assert name is not None
        others = fanout.resolve_lists(foreach, planner.results, skip=name)
        count = self.counts[source] if source in self.counts else len(planner.results.get(source) or [])
        count = fanout.common_length({n: count if n == name else len(others[n]) for n in fanout.list_refs(foreach)})
        self.streamed[sid] = (name, others)
        return count

    def _settle_early(self, sid: str, decision) -> None:
        """The step cannot even list its items (an upstream failed, or the list does not resolve)."""
        self._step_trace(sid)
        self.co.decided(("step", sid), decision)
        self.co.gates.settled_early(sid)
        self.co.scheduler.done(("expand", sid))

    def _step_trace(self, sid: str) -> StepTrace:
        tr = self.co.trace.setdefault(sid, StepTrace(optional=self.co.ctx.m.steps[sid].optional))
        if tr.items is None:
            tr.items = {}
        return tr

    def _prepare_workdir(self, sid: str, count: int) -> None:
        """steps/ID holds one directory per item: a whole-step commit of an earlier manifest goes to the trash,
        and item rows beyond the list's end are forgotten."""
        co = self.co
        state, wd = co.ctx.state, co.ctx.wd
        whole = state.step(sid)
        if whole is not None:
            final, trash = wd.steps / sid, None
            if whole.committed and os.path.lexists(final):
                trash = wd.trash / f"{sid}-{uuid.uuid4().hex[:8]}"
                os.replace(final, trash)  # before the row goes: a kill in between must not orphan its files
            state.forget_whole_step(sid)
            if trash is not None:
                safefs.remove_entry(trash)
        self.reuse.hold_past(sid, count)
        state.forget_items(sid, count)

    def settle(self, sid: str) -> None:
        """Every item settled: the step produced (all items did) or not (the items without result are named)."""
        co = self.co
        tr = co.trace[sid]
        if tr.status != State.PENDING:  # settled early
            return
        self.reuse.drop(sid)
        items = tr.items or {}
        count = self.counts.get(sid, 0)
        missing = {s: [i for i in range(count) if items.get(i) and items[i].status == s]
                   for s in (State.FAILED, State.SKIPPED, State.INTERRUPTED)}
        tr.attempts = []
        tr.wall_s = round(time.monotonic() - self.expanded_at.get(sid, time.monotonic()), 4)
        if not any(missing.values()):
            co.planner.gather_items(sid, count)
            cached = count > 0 and all(t.status == State.CACHED for t in items.values())
            tr.status, tr.cache_hit = (State.CACHED if cached else State.COMMITTED), cached
            tr.reason = f"{count} item(s)"
            co.ctx.events.emit("step_committed", step=sid, items=count, key=co.planner.keys[sid],
                               attempts=sum(len(t.attempts) for t in items.values()))
        else:
            tr.status = next(s for s in (State.FAILED, State.INTERRUPTED, State.SKIPPED) if missing[s])
            text = "; ".join(f"{s.value}: items {', '.join(map(str, ids[:20]))}" for s, ids in missing.items() if ids)
            tr.error = {"kind": "items_failed", "message": text, "retryable": False, "exit_code": None,
                        "failed_items": missing[State.FAILED], "skipped_items": missing[State.SKIPPED]}
            co.planner.failed[sid] = text
            co.ctx.events.emit("step_failed", step=sid, attempts=0, optional=co.ctx.m.steps[sid].optional,
                               why="items produced no result", **tr.error)
        co.scheduler.done(("step", sid))
