"""Deciding, per unit (a step, or one item of a foreach step), whether to run it and why (`--explain`), and
which steps a selection covers. What the run knows so far (results, keys, failures) lives here; the
coordinator is the only one that changes it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cachekey, fanout, gate, refs
from .answer import verify_outputs
from .manifest import LoadedManifest
from .state import WHOLE_STEP, StateDB, StepRecord
from .states import Action, unit_label
from .worker_client import DescribeFailed, WorkerIdentity, describe


class SelectionError(ValueError):
    """--only/--until/--force name an unknown step, or --only lacks committed upstream results."""


@dataclass
class Decision:
    step: str
    action: Action
    reason: str
    key: str | None = None
    components: dict[str, Any] | None = None
    args: dict[str, Any] | None = None
    identity: WorkerIdentity | None = None
    record: StepRecord | None = None
    kind: str | None = None  # for `fail`: worker_unavailable | invalid_reference | input_unreadable
    exit_code: int | None = None  # for `fail`: the exit code of a failed `--describe`
    item: int = WHOLE_STEP

    @property
    def label(self) -> str:
        return unit_label(self.step, None if self.item == WHOLE_STEP else self.item)


class Planner:
    """What the run knows so far: committed results and keys, the steps that produced nothing, identities."""

    def __init__(self, m: LoadedManifest, state: StateDB, *, force: set[str], env: dict[str, str],
                 cancel: threading.Event):
        self.m = m
        self.state = state
        self.force = force
        self.env = env
        self.cancel = cancel
        self.identities: dict[str, WorkerIdentity | DescribeFailed] = {}
        self.results: dict[str, Any] = {}  # step -> result (a foreach step's: its item results, in order)
        self.item_results: dict[str, Any] = {}  # "ID[i]" -> that item's result
        self.keys: dict[str, str] = {}  # "ID" or "ID[i]" -> committed cache key
        self.failed: dict[str, str] = {}  # "ID" or "ID[i]" -> why it produced nothing (failed / blocked)
        self.variations: dict[str, tuple[int, str]] = {}  # "X[i]" of a gated step -> (regeneration, base)

    def unit_deps(self, sid: str, item: int = WHOLE_STEP) -> list[str]:
        """The labels a unit needs: its step's dependencies; an item of a streaming step, the upstream item."""
        source = self.m.stream_from.get(sid)
        deps = [d for d in self.m.deps[sid] if d != source]
        if source is not None and item != WHOLE_STEP:
            deps.append(unit_label(source, item))
        return deps

    def blocked(self, sid: str, deps: list[str]) -> Decision | None:
        blocked = [d for d in deps if d in self.failed]
        if not blocked:
            return None
        why = "; ".join(f"{d}: {self.failed[d]}" for d in blocked)
        kind = "optional upstream" if all(self.m.steps[d.split("[")[0]].optional for d in blocked) else "upstream"
        return Decision(sid, Action.BLOCKED, f"{kind} {', '.join(blocked)} produced no result ({why})")

    def decide(self, sid: str, pending: set[str] | None = None, item: int = WHOLE_STEP,
               item_value: Any = None) -> Decision:
        """Run or skip, and why. `pending` (dry-run only): upstream steps that would run first."""
        step = self.m.steps[sid]
        deps = self.unit_deps(sid, item)
        blocked = self.blocked(sid, deps)
        if blocked:
            blocked.item = item
            return blocked
        waiting = [d for d in deps if pending and d in pending]
        if waiting:
            return Decision(sid, Action.RUN, f"upstream will run first: {', '.join(waiting)} (decided after it)",
                            item=item)
        try:
            identity = self._identity(step.worker)
        except DescribeFailed as exc:
            return Decision(sid, Action.FAIL, f"worker '{step.worker}' unavailable: {exc}",
                            kind="worker_unavailable", exit_code=exc.exit_code, item=item)
        try:
            args = fanout.resolve_args(step.args, self.results, item_value,
                                       None if item == WHOLE_STEP else item)
            args, regeneration = self._regenerated(sid, item, args)
            list_only = self._list_only_sources(sid) if item != WHOLE_STEP else set()
            upstream = {self._upstream_name(sid, d, item): self.keys[d]
                        for d in deps if d in self.keys and d not in list_only}
            parts = cachekey.components(identity, args, self.m.base_dir, upstream, self.state,
                                        step.ignore_input_files)
        except refs.RefError as exc:
            return Decision(sid, Action.FAIL, f"reference cannot be resolved: {exc}", identity=identity,
                            kind="invalid_reference", item=item)
        except cachekey.InputUnreadable as exc:
            return Decision(sid, Action.FAIL, str(exc), identity=identity, kind="input_unreadable", item=item)
        key = cachekey.key_of(parts)
        rec = self.state.step(sid, item)
        d = self._against_record(sid, rec, Decision(sid, Action.RUN, "", key=key, components=parts, args=args,
                                                    identity=identity, record=rec, item=item))
        if regeneration:
            vary = self.m.steps[self.m.gated_by[sid]].gate.vary
            d.reason += f" [gate regeneration {regeneration}: {vary.arg} {vary.add * regeneration:+d}]"
        return d

    def _regenerated(self, sid: str, item: int, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """An item a quality gate regenerates gets the varied args of the regeneration recorded for it (when
        it was recorded for these same base args). Raises RefError when `vary.arg` names no integer."""
        checker = self.m.gated_by.get(sid)
        if checker is None or item == WHOLE_STEP:
            return args, 0
        rule = self.m.steps[checker].gate
        base = gate.base_fingerprint(rule, args)
        record = self.state.gate_record(sid, item) or {}
        regeneration = int(record.get("regeneration", 0)) if record.get("base") == base else 0
        self.variations[unit_label(sid, item)] = (regeneration, base)
        return gate.varied(rule, args, regeneration), regeneration

    def _upstream_name(self, sid: str, dep: str, item: int) -> str:
        """How a key names a dependency: the upstream item a streaming item follows is `A[item]`, without its
        index, so an item whose upstream item moved (was reused at another index) keeps its key and is reused."""
        source = self.m.stream_from.get(sid)
        if source is not None and item != WHOLE_STEP and dep == unit_label(source, item):
            return f"{source}[item]"
        return dep

    def _list_only_sources(self, sid: str) -> set[str]:
        """The steps a foreach step's lists come from, when nothing else in the step uses them: an item's key then
        counts its own item (in its args), not the whole lists, so a changed item redoes only itself."""
        step = self.m.steps[sid]
        used = set(step.needs) | {r.step for _, r in refs.find(step.args, "$")[0]}
        return {ref.step for ref in fanout.list_refs(step.foreach).values()} - used

    def foreach_list(self, sid: str) -> list[Any]:
        """The items a foreach step runs over (its upstream is settled): its list's elements, or for a zipped
        step one object per position. Raises RefError (also when zipped lists differ in length)."""
        foreach = self.m.steps[sid].foreach
        lists = fanout.resolve_lists(foreach, self.results)
        count = fanout.common_length({name: len(lst) for name, lst in lists.items()})
        return [fanout.item_at(foreach, lists, i) for i in range(count)]

    def _against_record(self, sid: str, rec: StepRecord | None, d: Decision) -> Decision:
        """The reason to run (or to skip), comparing the new key with the committed record."""
        if sid in self.force:
            d.reason = "forced (--force)"
        elif rec is None or not rec.committed:
            d.reason = "new (never committed)"
            if rec is not None and rec.status in ("failed", "interrupted"):
                err = rec.last_error or {}
                detail = f" ({err.get('kind')}: {str(err.get('message', ''))[:120]})" if err else ""
                d.reason = f"previous {rec.status}{detail}"
        elif rec.committed_key != d.key:
            d.reason = "; ".join(cachekey.diff(rec.components, d.components))
        else:
            problems = self.verify_committed(rec)
            if problems:
                kind = "output missing" if any("missing" in p for p in problems) else "output corrupt"
                d.reason = f"{kind}: {problems[0]}"
            else:
                d.action, d.reason = Action.SKIP, "up to date (cache hit)"
        return d

    def verify_committed(self, rec: StepRecord) -> list[str]:
        if not rec.committed_dir or not Path(rec.committed_dir).is_dir() or Path(rec.committed_dir).is_symlink():
            return [f"committed directory {rec.committed_dir} is missing"]
        problem = self.state.load_result(rec)
        return ([problem] if problem else []) + verify_outputs(rec.outputs, memo=self.state)

    def _identity(self, worker: str) -> WorkerIdentity:
        """`--describe`, once per worker per run."""
        if worker not in self.identities:
            try:
                self.identities[worker] = describe(self.m.worker_argv(worker), cwd=self.m.base_dir, env=self.env,
                                                   timeout_s=self.m.describe_timeout_s(worker), cancel=self.cancel)
            except DescribeFailed as exc:
                self.identities[worker] = exc
        found = self.identities[worker]
        if isinstance(found, DescribeFailed):
            raise found
        return found

    def use_committed(self, sid: str, rec: StepRecord | None) -> None:
        assert rec is not None and rec.committed_key is not None
        self.use_result(sid, rec.item, rec.result, rec.committed_key)

    def use_result(self, sid: str, item: int, result: Any, key: str) -> None:
        if item == WHOLE_STEP:
            self.results[sid], self.keys[sid] = result, key
        else:
            label = unit_label(sid, item)
            self.item_results[label], self.keys[label] = result, key

    def gather_items(self, sid: str, count: int) -> None:
        """A foreach step whose items all produced: its result is their results in order; its key covers theirs."""
        labels = [unit_label(sid, i) for i in range(count)]
        self.results[sid] = [self.item_results[lb] for lb in labels]
        self.keys[sid] = cachekey.sha([self.keys[lb] for lb in labels])

    def _committed_upstream(self, dep: str) -> str | None:
        """Load a step committed by an earlier run (all its items, for a foreach step); None, or what is wrong."""
        if not self.m.steps[dep].foreach:
            rec = self.state.step(dep)
            problems = self.verify_committed(rec) if rec is not None and rec.committed else ["not committed"]
            if not problems:
                self.use_committed(dep, rec)
            return problems[0] if problems else None
        items = self.state.step_items(dep)
        if not items or sorted(items) != list(range(len(items))):
            return "its items are not all committed"
        for i in range(len(items)):
            rec = items[i]
            problems = self.verify_committed(rec) if rec.committed else ["not committed"]
            if problems:
                return f"item {i}: {problems[0]}"
            self.use_committed(dep, rec)
        self.gather_items(dep, len(items))
        return None

    def select(self, only: set[str], until: set[str]) -> list[str]:
        names = set(self.m.order)
        for flag, ids in (("--force", self.force), ("--only", only), ("--until", until)):
            unknown = sorted(ids - names)
            if unknown:
                raise SelectionError(f"{flag}: unknown step(s) {', '.join(unknown)} (steps: {', '.join(self.m.order)})")
        if only:
            chosen = set(only)
        elif until:
            chosen = set(until)
            for u in until:
                chosen |= self.m.ancestors(u)
        else:
            chosen = names
        missing = []
        for sid in sorted(chosen):
            for dep in self.m.deps[sid]:
                if dep in chosen or dep in self.results:
                    continue
                problem = self._committed_upstream(dep)
                if problem:
                    missing.append(f"{sid} needs {dep} ({problem})")
        if missing:
            raise SelectionError("--only: upstream results are not committed: " + "; ".join(missing)
                                 + " — run them first (e.g. --until)")
        return [s for s in self.m.order if s in chosen]

    def plan(self, selected: list[str]) -> list[Decision]:
        """What a run would do, without running anything (workers are only asked `--describe`)."""
        pending: set[str] = set()
        plan = []
        for sid in selected:
            decisions = self._plan_step(sid, pending)
            if any(d.action in (Action.RUN, Action.FAIL) for d in decisions):
                pending.add(sid)
            elif self.m.steps[sid].foreach and all(d.action == Action.SKIP for d in decisions):
                self.gather_items(sid, len(decisions))
            plan.extend(decisions)
        return plan

    def _plan_step(self, sid: str, pending: set[str]) -> list[Decision]:
        if not self.m.steps[sid].foreach:
            d = self.decide(sid, pending)
            if d.action == Action.SKIP:
                self.use_committed(sid, d.record)
            return [d]
        waiting = [d for d in self.m.deps[sid] if d in pending]
        if waiting:
            return [Decision(sid, Action.RUN, f"foreach; upstream will run first: {', '.join(waiting)} "
                             "(items decided after it)")]
        try:
            values = self.foreach_list(sid)
        except refs.RefError as exc:
            return [Decision(sid, Action.FAIL, f"reference cannot be resolved: {exc}", kind="invalid_reference")]
        decisions = [self.decide(sid, pending, i, v) for i, v in enumerate(values)]
        for d in decisions:
            if d.action == Action.SKIP:
                self.use_committed(sid, d.record)
        return decisions
