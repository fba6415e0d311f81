"""Quality gates inside the coordinator (the rules are in gate.py).

For a gate on step C that regenerates step X (both selected), the graph gets one node per item,
("gated", X, i), done once item i's verdict is decided: passed, exhausted (no regeneration left) or unchecked
(C's item produced no result). Every other consumer of X waits for it (a streaming item i for ("gated", X, i),
X as a whole for all of them), so nothing downstream is ever made from a candidate that is replaced later.

A failing verdict with regenerations left records regeneration r + 1 in X's item row (state.db, before anything
else happens, so a killed run resumes from it), then puts X's item i and C's item i back into the graph: the
planner decides X[i] with the varied args (a new key: a new run, or a cache hit on a resume) and C[i] checks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import gate
from .states import State, unit_label

if TYPE_CHECKING:
    from .coordinator import Coordinator


class GateKeeper:
    def __init__(self, coordinator: Coordinator):
        self.co = coordinator
        self.regenerated_by: dict[str, str] = {}  # X -> C, for the gates whose two steps are both selected
        self.never_passed: dict[str, list[int]] = {}  # X -> items whose regenerations ran out

    def activate(self, chosen: set[str]) -> None:
        self.regenerated_by = {x: c for x, c in self.co.ctx.m.gated_by.items() if x in chosen and c in chosen}
        self._checks = {c: x for x, c in self.regenerated_by.items()}

    # extra graph edges ----------------------------------------------------------------------------------------
    def item_waits(self, sid: str, item: int) -> list[tuple]:
        """A streaming consumer of a gated step (not the gate's own step) waits for item i's verdict."""
        source = self.co.ctx.m.stream_from.get(sid)
        if source in self.regenerated_by and self.regenerated_by[source] != sid:
            return [("gated", source, item)]
        return []

    def step_waits(self, sid: str, count: int) -> list[tuple]:
        """A gated step as a whole (what needs its list) waits for every verdict."""
        return [("gated", sid, i) for i in range(count)] if sid in self.regenerated_by else []

    def settled_early(self, sid: str) -> None:
        """The gate's step could not even list its items: nothing will be judged."""
        target = self._checks.get(sid)
        if target is not None:
            for i in range(self.co.foreach.counts.get(target, 0)):
                self.co.scheduler.done(("gated", target, i))

    # verdicts -------------------------------------------------------------------------------------------------
    def settled(self, node: tuple) -> bool:
        """A unit settled. True when it is a check item whose verdict puts it back into the graph (regeneration)."""
        if node[0] != "item" or node[1] not in self._checks:
            return False
        check, item = node[1], node[2]
        target = self._checks[check]
        rule = self.co.ctx.m.steps[check].gate
        regeneration, base = self.co.planner.variations.get(unit_label(target, item), (0, ""))
        check_trace = self.co.trace[check].items[item]
        if not State(check_trace.status).produced:
            self._final(target, item, rule, regeneration, base, gate.UNCHECKED, None)
            return False
        passed, value, score = gate.verdict_of(rule, self.co.planner.item_results[unit_label(check, item)])
        entry = {"regeneration": regeneration, "value": value, "score": score}
        if passed:
            self._final(target, item, rule, regeneration, base, gate.PASSED, entry)
            return False
        again = regeneration < rule.max_regenerations and not self.co.ctx.cancel.is_set()
        self.co.ctx.events.emit("gate_failed", step=check, item=item, regenerates=target,
                                regeneration=regeneration, value=value, score=score, will_regenerate=again)
        if again:
            self._regenerate(check, target, item, regeneration + 1, base, entry)
            return True
        self._final(target, item, rule, regeneration, base, gate.EXHAUSTED, entry)
        return False

    def _regenerate(self, check: str, target: str, item: int, regeneration: int, base: str,
                    entry: dict[str, Any]) -> None:
        self._store(target, item, check, base, regeneration, "pending", entry)
        if self.co.ctx.explain:
            self.co.ctx.say(f"gate    {check}[{item}]: {target}[{item}] failed the check; regeneration {regeneration}")
        co = self.co
        co.scheduler.redo(("item", target, item), [], co.priority(target, item))
        co.scheduler.redo(("item", check, item), [("item", target, item)], co.priority(check, item))

    def _final(self, target: str, item: int, rule: gate.Gate, regeneration: int, base: str, verdict: str,
               entry: dict[str, Any] | None) -> None:
        check = self.regenerated_by[target]
        record = self._store(target, item, check, base, regeneration, verdict, entry)
        tr = self.co.unit_trace(target, item)
        tr.regenerations = regeneration
        tr.gate = {"step": check, "verdict": verdict, "history": record["history"]}
        if verdict == gate.EXHAUSTED:
            self._exhausted(target, item, rule, regeneration)
        self.co.scheduler.done(("gated", target, item))

    def _exhausted(self, target: str, item: int, rule: gate.Gate, regeneration: int) -> None:
        co, check = self.co, self.regenerated_by[target]
        self.never_passed.setdefault(target, []).append(item)
        self.never_passed[target].sort()
        co.ctx.events.emit("gate_exhausted", step=check, item=item, regenerates=target, regeneration=regeneration,
                           on_exhausted=rule.on_exhausted)
        if rule.on_exhausted != "fail":
            return
        tr = co.unit_trace(target, item)
        message = f"never passed the gate of '{check}' ('{rule.pass_path}') in {regeneration + 1} candidate(s)"
        tr.status, tr.error = State.FAILED, {"kind": "gate_exhausted", "message": message, "retryable": False,
                                             "exit_code": None}
        co.planner.failed[unit_label(target, item)] = f"gate_exhausted: {message}"
        co.ctx.events.emit("step_failed", step=target, item=item, attempts=len(tr.attempts),
                           optional=co.ctx.m.steps[target].optional, why="the quality gate was not passed", **tr.error)

    def _store(self, target: str, item: int, check: str, base: str, regeneration: int, verdict: str,
               entry: dict[str, Any] | None) -> dict[str, Any]:
        """The item's gate record: history kept while the base args stay the same, one entry per candidate."""
        if not base:  # the item was never planned (its own upstream failed): nothing to keep
            return {"history": []}
        old = self.co.ctx.state.gate_record(target, item) or {}
        history = old.get("history", []) if old.get("base") == base else []
        if entry is not None:
            history = [h for h in history if h.get("regeneration") != entry["regeneration"]] + [entry]
        record = {"base": base, "regeneration": regeneration, "step": check, "verdict": verdict,
                  "history": sorted(history, key=lambda h: h.get("regeneration", 0))}
        if record != old:  # a resumed run that reaches the same verdicts writes nothing
            self.co.ctx.state.set_gate_record(target, item, record)
        return record
