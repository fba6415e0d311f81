"""Deciding, per step, whether to run it and why (`--explain`), and which steps a selection covers.

Separate from executing (`execute.StepExecutor`), so a parallel scheduler can later call both from worker slots.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cachekey, refs
from .answer import verify_outputs
from .manifest import LoadedManifest
from .state import StateDB, StepRecord
from .worker_client import DescribeFailed, WorkerIdentity, describe


class SelectionError(ValueError):
    """--only/--until/--force name an unknown step, or --only lacks committed upstream results."""


@dataclass
class Decision:
    step: str
    action: str  # run | skip | blocked | fail
    reason: str
    key: str | None = None
    components: dict[str, Any] | None = None
    args: dict[str, Any] | None = None
    identity: WorkerIdentity | None = None
    record: StepRecord | None = None
    kind: str | None = None  # for `fail`: worker_unavailable | invalid_reference | input_unreadable
    exit_code: int | None = None  # for `fail`: the exit code of a failed `--describe`


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
        self.results: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.failed: dict[str, str] = {}  # step -> why it produced nothing (failed / blocked)

    def decide(self, sid: str, pending: set[str] | None = None) -> Decision:
        """Run or skip, and why. `pending` (dry-run only): upstream steps that would run first."""
        step = self.m.steps[sid]
        deps = self.m.deps[sid]
        blocked = [d for d in deps if d in self.failed]
        if blocked:
            why = "; ".join(f"{d}: {self.failed[d]}" for d in blocked)
            kind = "optional upstream" if all(self.m.steps[d].optional for d in blocked) else "upstream"
            return Decision(sid, "blocked", f"{kind} {', '.join(blocked)} produced no result ({why})")
        waiting = [d for d in deps if pending and d in pending]
        if waiting:
            return Decision(sid, "run", f"upstream will run first: {', '.join(waiting)} (decided after it)")
        try:
            identity = self._identity(step.worker)
        except DescribeFailed as exc:
            return Decision(sid, "fail", f"worker '{step.worker}' unavailable: {exc}", kind="worker_unavailable",
                            exit_code=exc.exit_code)
        try:
            args = refs.resolve(step.args, self.results)
            upstream = {d: self.keys[d] for d in deps if d in self.keys}
            parts = cachekey.components(identity, args, self.m.base_dir, upstream, self.state,
                                        step.ignore_input_files)
        except refs.RefError as exc:
            return Decision(sid, "fail", f"reference cannot be resolved: {exc}", identity=identity,
                            kind="invalid_reference")
        except cachekey.InputUnreadable as exc:
            return Decision(sid, "fail", str(exc), identity=identity, kind="input_unreadable")
        key = cachekey.key_of(parts)
        rec = self.state.step(sid)
        return self._against_record(sid, rec, Decision(sid, "run", "", key=key, components=parts, args=args,
                                                       identity=identity, record=rec))

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
                d.action, d.reason = "skip", "up to date (cache hit)"
        return d

    def verify_committed(self, rec: StepRecord) -> list[str]:
        if not rec.committed_dir or not Path(rec.committed_dir).is_dir() or Path(rec.committed_dir).is_symlink():
            return [f"committed directory {rec.committed_dir} is missing"]
        problem = self.state.load_result(rec)
        return ([problem] if problem else []) + verify_outputs(rec.outputs)

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
        self.results[sid] = rec.result
        self.keys[sid] = rec.committed_key

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
                rec = self.state.step(dep)
                problems = self.verify_committed(rec) if rec is not None and rec.committed else ["not committed"]
                if problems:
                    missing.append(f"{sid} needs {dep} ({problems[0]})")
                else:
                    self.use_committed(dep, rec)
        if missing:
            raise SelectionError("--only: upstream results are not committed: " + "; ".join(missing)
                                 + " — run them first (e.g. --until)")
        return [s for s in self.m.order if s in chosen]

    def plan(self, selected: list[str]) -> list[Decision]:
        """What a run would do, without running anything (workers are only asked `--describe`)."""
        pending: set[str] = set()
        plan = []
        for sid in selected:
            d = self.decide(sid, pending)
            if d.action == "skip":
                self.use_committed(sid, d.record)
            elif d.action in ("run", "fail"):
                pending.add(sid)
            plan.append(d)
        return plan
