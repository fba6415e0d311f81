"""The reference runner: plan, skip what is committed and still verifies, run the rest with retries, commit
atomically, record everything.

Steps run one at a time in topological order. The decision for one step (`_decide`) and the execution of
one step (`_execute_step`) are separate so a parallel scheduler can later call them from worker slots.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import cachekey, refs
from .events import EventLog
from .lock import WorkdirLock, WorkdirLocked
from .manifest import LoadedManifest, Step
from .schemas import SchemaMissing, SchemaStore
from .state import StateDB, StepRecord
from .worker_client import (
    WORKER_KINDS,
    AttemptOutcome,
    DescribeFailed,
    WorkerIdentity,
    describe,
    run_attempt,
    verify_outputs,
    worker_env,
)

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID = 2
EXIT_LOCKED = 3
EXIT_SETUP = 4
EXIT_INTERRUPTED = 130


class SelectionError(ValueError):
    """--only/--until/--force name an unknown step, or --only lacks committed upstream results."""


@dataclass
class RunOptions:
    force: set[str] = field(default_factory=set)
    only: set[str] = field(default_factory=set)
    until: set[str] = field(default_factory=set)
    dry_run: bool = False
    explain: bool = False
    events_stdout: bool = False


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


@dataclass
class StepTrace:
    status: str = "pending"  # committed | cached | failed | skipped | interrupted | not_selected
    reason: str = ""
    cache_hit: bool = False
    cache_key: str | None = None
    optional: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    error: dict[str, Any] | None = None


class Runner:
    def __init__(self, loaded: LoadedManifest, options: RunOptions | None = None, *,
                 schemas: SchemaStore | None = None, sleep: Callable[[float], None] | None = None,
                 console: TextIO | None = None, events_mirror: TextIO | None = None,
                 cancel: threading.Event | None = None, rng: random.Random | None = None):
        self.m = loaded
        self.opts = options or RunOptions()
        self.schemas = schemas or SchemaStore()
        self.cancel = cancel or threading.Event()
        self._sleep = sleep
        self.rng = rng or random.Random()
        self.workdir = loaded.workdir
        self.bridge_dir = self.workdir / ".bridge"
        self.env = worker_env()
        self.console = console
        self.events_mirror = events_mirror
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.identities: dict[str, WorkerIdentity | DescribeFailed] = {}
        self.results: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.failed: dict[str, str] = {}  # step -> why it produced nothing (failed / blocked)
        self.trace: dict[str, StepTrace] = {}
        self.state: StateDB | None = None
        self.events: EventLog | None = None

    # ---------------------------------------------------------------------------------------------- api
    def run(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.opts.dry_run:
            return self._dry_run()
        lock = WorkdirLock(self.bridge_dir / "lock")
        try:
            lock.acquire()
        except WorkdirLocked as exc:
            self._say(f"[refused] {exc}")
            return EXIT_LOCKED
        try:
            return self._locked_run()
        finally:
            lock.release()

    # --------------------------------------------------------------------------------------------- run
    def _locked_run(self) -> int:
        started = time.monotonic()
        self.state = StateDB(self.bridge_dir / "state.db")
        self.events = EventLog(self.workdir / "events.jsonl", self.run_id, self.events_mirror)
        self.events.listeners.append(self._human)
        exit_code = EXIT_INTERRUPTED  # if something below raises, the run did not finish
        try:
            exit_code = self._run_body()
            return exit_code
        finally:
            status = {EXIT_OK: "ok", EXIT_INTERRUPTED: "interrupted"}.get(exit_code, "failed")
            if self.state is not None:
                self.state.end_run(self.run_id, status, exit_code)
            self._write_trace(exit_code, time.monotonic() - started)
            self.events.emit("run_end", status=status, exit_code=exit_code,
                             wall_s=round(time.monotonic() - started, 3), summary=self._summary_counts())
            self._print_summary(exit_code)
            self.events.close()
            self.state.close()

    def _run_body(self) -> int:
        try:
            self.schemas.envelope()
        except SchemaMissing as exc:
            self._say(f"[setup error] {exc}")
            return EXIT_SETUP
        self.state.start_run(self.run_id, str(self.m.path), self._options_dict())
        for run_id, step, attempt in self.state.recover_abandoned():
            self.events.emit("attempt_abandoned", step=step, attempt=attempt, previous_run=run_id,
                             message="the previous runner stopped while this attempt ran")
        self._clean_scratch()
        self.events.emit("run_start", manifest=str(self.m.path), workdir=str(self.workdir),
                         steps=list(self.m.order), options=self._options_dict(), pid=os.getpid())
        try:
            selected = self._select()
        except SelectionError as exc:
            self._say(f"[invalid selection] {exc}")
            return EXIT_INVALID
        return self._execute_all(selected)

    def _execute_all(self, selected: list[str]) -> int:
        for sid in self.m.order:
            if sid not in selected:
                self.trace[sid] = StepTrace(status="not_selected", optional=self.m.steps[sid].optional)
        for sid in selected:
            if self.cancel.is_set():
                break
            step = self.m.steps[sid]
            tr = self.trace[sid] = StepTrace(optional=step.optional)
            t0 = time.monotonic()
            decision = self._decide(sid)
            if self.opts.explain:
                self._say(f"{decision.action:<7} {sid}: {decision.reason}")
            tr.reason, tr.cache_key = decision.reason, decision.key
            if decision.action == "skip":
                self._use_committed(sid, decision.record)
                self.state.mark_cache_hit(sid)
                tr.status, tr.cache_hit = "cached", True
                self.events.emit("step_skipped", step=sid, reason=decision.reason, cache_hit=True, key=decision.key)
            elif decision.action == "blocked":
                tr.status = "skipped"
                self.failed[sid] = decision.reason
                self.events.emit("step_skipped", step=sid, reason=decision.reason, cache_hit=False)
            elif decision.action == "fail":
                if self.cancel.is_set():
                    break
                tr.status, tr.error = "failed", {"kind": "worker_unavailable" if decision.identity is None
                                                 else "invalid_reference", "message": decision.reason}
                self.failed[sid] = decision.reason
                self.state.mark_failed(sid, decision.key, tr.error)
                self.events.emit("step_failed", step=sid, optional=step.optional, **tr.error)
            else:
                self._execute_step(step, decision, tr)
            tr.wall_s = round(time.monotonic() - t0, 4)
        if self.cancel.is_set():
            return EXIT_INTERRUPTED
        hard = [s for s, t in self.trace.items() if t.status in ("failed", "skipped") and not self._tolerated(s)]
        return EXIT_STEP_FAILED if hard else EXIT_OK

    def _tolerated(self, sid: str) -> bool:
        """A failure (or a skip) that does not fail the run: the step, or the upstream that blocked it, is optional."""
        if self.m.steps[sid].optional:
            return True
        tr = self.trace[sid]
        if tr.status != "skipped":
            return False
        blockers = [d for d in self.m.ancestors(sid) if self.trace.get(d) and self.trace[d].status == "failed"]
        return bool(blockers) and all(self.m.steps[d].optional for d in blockers)

    # ---------------------------------------------------------------------------------------- deciding
    def _decide(self, sid: str, pending: set[str] | None = None) -> Decision:
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
            return Decision(sid, "fail", f"worker '{step.worker}' unavailable: {exc}")
        try:
            args = refs.resolve(step.args, self.results)
        except refs.RefError as exc:
            return Decision(sid, "fail", f"reference cannot be resolved: {exc}", identity=identity)
        upstream = {d: self.keys[d] for d in deps if d in self.keys}
        parts = cachekey.components(identity, args, self.m.base_dir, upstream, self.state, step.ignore_input_files)
        key = cachekey.key_of(parts)
        rec = self.state.step(sid)
        common = {"key": key, "components": parts, "args": args, "identity": identity, "record": rec}
        if sid in self.opts.force:
            return Decision(sid, "run", "forced (--force)", **common)
        if rec is None or not rec.committed:
            if rec is not None and rec.status in ("failed", "interrupted"):
                err = rec.last_error or {}
                detail = f" ({err.get('kind')}: {str(err.get('message', ''))[:120]})" if err else ""
                return Decision(sid, "run", f"previous {rec.status}{detail}", **common)
            return Decision(sid, "run", "new (never committed)", **common)
        if rec.committed_key != key:
            return Decision(sid, "run", "; ".join(cachekey.diff(rec.components, parts)), **common)
        problems = self._verify_committed(rec)
        if problems:
            kind = "output missing" if any("missing" in p for p in problems) else "output corrupt"
            return Decision(sid, "run", f"{kind}: {problems[0]}", **common)
        return Decision(sid, "skip", "up to date (cache hit)", **common)

    def _verify_committed(self, rec: StepRecord) -> list[str]:
        if not rec.committed_dir or not Path(rec.committed_dir).is_dir():
            return [f"committed directory {rec.committed_dir} is missing"]
        return verify_outputs(rec.outputs)

    def _identity(self, worker: str) -> WorkerIdentity:
        """`--describe`, once per worker per run."""
        if worker not in self.identities:
            try:
                self.identities[worker] = describe(self.m.worker_argv(worker), cwd=self.m.base_dir, env=self.env,
                                                   cancel=self.cancel)
            except DescribeFailed as exc:
                self.identities[worker] = exc
        found = self.identities[worker]
        if isinstance(found, DescribeFailed):
            raise found
        return found

    def _use_committed(self, sid: str, rec: StepRecord | None) -> None:
        assert rec is not None and rec.committed_key is not None
        self.results[sid] = rec.result
        self.keys[sid] = rec.committed_key

    # --------------------------------------------------------------------------------------- selecting
    def _select(self) -> list[str]:
        names = set(self.m.order)
        for flag, ids in (("--force", self.opts.force), ("--only", self.opts.only), ("--until", self.opts.until)):
            unknown = sorted(ids - names)
            if unknown:
                raise SelectionError(f"{flag}: unknown step(s) {', '.join(unknown)} (steps: {', '.join(self.m.order)})")
        if self.opts.only:
            chosen = set(self.opts.only)
        elif self.opts.until:
            chosen = set(self.opts.until)
            for u in self.opts.until:
                chosen |= self.m.ancestors(u)
        else:
            chosen = names
        missing = []
        for sid in sorted(chosen):
            for dep in self.m.deps[sid]:
                if dep in chosen or dep in self.results:
                    continue
                rec = self.state.step(dep) if self.state else None
                problems = self._verify_committed(rec) if rec is not None and rec.committed else ["not committed"]
                if problems:
                    missing.append(f"{sid} needs {dep} ({problems[0]})")
                else:
                    self._use_committed(dep, rec)
        if missing:
            raise SelectionError("--only: upstream results are not committed: " + "; ".join(missing)
                                 + " — run them first (e.g. --until)")
        return [s for s in self.m.order if s in chosen]

    # --------------------------------------------------------------------------------------- executing
    def _execute_step(self, step: Step, decision: Decision, tr: StepTrace) -> None:
        sid = step.id
        policy = step.retry_policy(self.m.manifest.defaults)
        timeout_s = step.timeout_s or self.m.manifest.defaults.timeout_s
        grace_s = self.m.manifest.defaults.kill_grace_s
        prefix = self.m.worker_argv(step.worker)
        self.state.mark_running(sid, decision.key)
        self.events.emit("step_start", step=sid, worker=step.worker, reason=decision.reason, key=decision.key,
                         max_attempts=policy.max_attempts, timeout_s=timeout_s)
        attempt = 0
        while True:
            attempt += 1
            tag = f"{sid}-{attempt}-{uuid.uuid4().hex[:8]}"
            staging = self.bridge_dir / "staging" / tag
            staging.mkdir(parents=True, exist_ok=True)
            staging = staging.resolve()
            logs = self.bridge_dir / "attempts" / tag
            args = dict(decision.args or {})
            args["output_dir"] = str(staging)
            row = self.state.start_attempt(self.run_id, sid, attempt, decision.key, str(staging))
            self.events.emit("attempt_start", step=sid, attempt=attempt, staging_dir=str(staging),
                             argv=prefix + ["--input", str(logs / "args.json")])

            def relay(ev: dict[str, Any], _attempt: int = attempt) -> None:
                payload = {k: v for k, v in ev.items() if k not in ("event", "ts", "run_id")}
                name = ev["event"] if ev["event"] in ("progress", "log") else "worker_event"
                self.events.emit(name if name != "log" else "worker_log", step=sid, attempt=_attempt,
                                 worker_ts=ev.get("ts"), **{k: v for k, v in payload.items()
                                                            if k not in ("step", "attempt")})

            outcome = run_attempt(prefix, args, args_file=logs / "args.json", staging_dir=staging,
                                  cwd=self.m.base_dir, env=self.env, schemas=self.schemas, worker=step.worker,
                                  timeout_s=timeout_s, kill_grace_s=grace_s, cancel=self.cancel, on_event=relay,
                                  stderr_log=logs / "stderr.log")
            committed_dir = None
            if outcome.ok:
                try:
                    committed_dir = self._commit(sid, staging, outcome, decision)
                except OSError as exc:
                    outcome = AttemptOutcome(ok=False, kind="commit_failed", message=f"could not commit: {exc}",
                                             exit_code=outcome.exit_code, wall_s=outcome.wall_s,
                                             peak_rss_mb=outcome.peak_rss_mb)
            status = "committed" if outcome.ok else ("interrupted" if outcome.kind == "interrupted" else "failed")
            self.state.end_attempt(row, status, outcome.exit_code, outcome.kind, outcome.message or None,
                                   outcome.retryable if not outcome.ok else None, outcome.wall_s, outcome.peak_rss_mb)
            record = {"attempt": attempt, "status": status, "exit_code": outcome.exit_code,
                      "error_kind": outcome.kind, "message": outcome.message or None, "wall_s": outcome.wall_s,
                      "peak_rss_mb": outcome.peak_rss_mb, "warnings": outcome.warnings}
            tr.attempts.append(record)
            self.events.emit("attempt_end", step=sid, **record)
            if outcome.ok:
                tr.status = "committed"
                self.events.emit("step_committed", step=sid, attempts=attempt, key=decision.key,
                                 committed_dir=committed_dir,
                                 outputs=len((outcome.envelope or {}).get("outputs") or []))
                return
            shutil.rmtree(staging, ignore_errors=True)
            if outcome.kind == "interrupted":
                tr.status, tr.error = "interrupted", outcome.error_dict()
                self.state.mark_failed(sid, decision.key, outcome.error_dict(), status="interrupted")
                self.events.emit("step_interrupted", step=sid, attempt=attempt)
                return
            if self._should_retry(outcome, policy.retry_on) and attempt < policy.max_attempts:
                delay = policy.backoff_s[min(attempt - 1, len(policy.backoff_s) - 1)]
                delay *= 1 + self.rng.uniform(0, policy.jitter_fraction)
                self.events.emit("retry_scheduled", step=sid, attempt=attempt, next_attempt=attempt + 1,
                                 delay_s=round(delay, 3), error_kind=outcome.kind, message=outcome.message)
                self._wait(delay)
                if self.cancel.is_set():
                    tr.status, tr.error = "interrupted", outcome.error_dict()
                    self.state.mark_failed(sid, decision.key, outcome.error_dict(), status="interrupted")
                    self.events.emit("step_interrupted", step=sid, attempt=attempt)
                    return
                continue
            tr.status, tr.error = "failed", outcome.error_dict()
            self.failed[sid] = f"{outcome.kind}: {outcome.message[:200]}"
            self.state.mark_failed(sid, decision.key, outcome.error_dict())
            if outcome.kind not in policy.retry_on:
                why = f"'{outcome.kind}' is not retried"
            elif not self._should_retry(outcome, policy.retry_on):
                why = "the worker said retryable=false"
            else:
                why = "retries exhausted"
            self.events.emit("step_failed", step=sid, attempts=attempt, optional=step.optional, why=why,
                             **outcome.error_dict())
            return

    @staticmethod
    def _should_retry(outcome: AttemptOutcome, retry_on: list[str]) -> bool:
        if outcome.kind not in retry_on:
            return False
        if outcome.kind in WORKER_KINDS:
            return outcome.retryable  # the worker knows best; it may say a transient-looking error is final
        return True

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif seconds > 0:
            self.cancel.wait(seconds)

    def _commit(self, sid: str, staging: Path, outcome: AttemptOutcome, decision: Decision) -> str:
        """Atomic rename of the staging dir into steps/ID, then the durable record (see docs/runner.md)."""
        envelope = outcome.envelope or {}
        steps_dir = self.workdir.resolve() / "steps"
        steps_dir.mkdir(exist_ok=True)
        final = steps_dir / sid
        result = _rewrite_prefix(envelope.get("result"), str(staging), str(final))
        outputs = _rewrite_prefix(envelope.get("outputs") or [], str(staging), str(final))
        trash = None
        if final.exists():
            trash = self.bridge_dir / "trash" / f"{sid}-{uuid.uuid4().hex[:8]}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, trash)
        os.replace(staging, final)
        self.state.commit_step(sid, decision.key, decision.components, result, outputs, str(final))
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self.results[sid] = result
        self.keys[sid] = decision.key
        return str(final)

    def _clean_scratch(self) -> None:
        """Staging dirs and trash from earlier (killed) runs: never committed, safe to drop under the lock."""
        for name in ("staging", "trash"):
            d = self.bridge_dir / name
            if d.is_dir():
                for child in d.iterdir():
                    shutil.rmtree(child, ignore_errors=True)

    # ---------------------------------------------------------------------------------------- dry run
    def _dry_run(self) -> int:
        self.state = StateDB(self.bridge_dir / "state.db")
        try:
            try:
                selected = self._select()
            except SelectionError as exc:
                self._say(f"[invalid selection] {exc}")
                return EXIT_INVALID
            plan = self.plan(selected)
            for d in plan:
                self._say(f"{d.action:<7} {d.step}: {d.reason}")
                if self.events_mirror:
                    self.events_mirror.write(json.dumps({"event": "plan", "step": d.step, "action": d.action,
                                                         "reason": d.reason, "key": d.key}) + "\n")
            return EXIT_OK
        finally:
            self.state.close()

    def plan(self, selected: list[str]) -> list[Decision]:
        """What a run would do, without running anything (workers are only asked `--describe`)."""
        pending: set[str] = set()
        plan = []
        for sid in selected:
            d = self._decide(sid, pending)
            if d.action == "skip":
                self._use_committed(sid, d.record)
            elif d.action in ("run", "fail"):
                pending.add(sid)
            plan.append(d)
        return plan

    # -------------------------------------------------------------------------------------- reporting
    def _options_dict(self) -> dict[str, Any]:
        return {"force": sorted(self.opts.force), "only": sorted(self.opts.only), "until": sorted(self.opts.until),
                "dry_run": self.opts.dry_run, "explain": self.opts.explain}

    def _summary_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for tr in self.trace.values():
            counts[tr.status] = counts.get(tr.status, 0) + 1
        return counts

    def _write_trace(self, exit_code: int, wall_s: float) -> None:
        doc = {"run_id": self.run_id, "manifest": str(self.m.path), "workdir": str(self.workdir),
               "exit_code": exit_code, "wall_s": round(wall_s, 3),
               "workers": {w: (i.as_dict() if isinstance(i, WorkerIdentity) else {"error": str(i)})
                           for w, i in self.identities.items()},
               "steps": {sid: {"status": t.status, "reason": t.reason, "cache_hit": t.cache_hit,
                               "cache_key": t.cache_key, "optional": t.optional, "wall_s": t.wall_s,
                               "peak_rss_mb": max((a["peak_rss_mb"] or 0 for a in t.attempts), default=None),
                               "error": t.error, "attempts": t.attempts}
                         for sid, t in self.trace.items()}}
        path = self.workdir / "trace.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.write(text + "\n")
            self.console.flush()

    def _human(self, ev: dict[str, Any]) -> None:
        if self.console is None:
            return
        e, sid = ev["event"], ev.get("step")
        line = None
        if e == "step_start":
            line = f"▶ {sid} ({ev['worker']}): {ev['reason']}"
        elif e == "step_skipped":
            line = f"↷ {sid} skipped: {ev['reason']}"
        elif e == "retry_scheduled":
            line = f"↻ {sid} attempt {ev['attempt']} failed ({ev['error_kind']}); retry in {ev['delay_s']:g} s"
        elif e == "step_committed":
            line = f"✓ {sid} committed after {ev['attempts']} attempt(s)"
        elif e == "step_failed":
            line = f"✗ {sid} failed ({ev.get('kind')}): {str(ev.get('message', ''))[:300]}"
        elif e == "step_interrupted":
            line = f"■ {sid} interrupted"
        if line:
            self._say(line)

    def _print_summary(self, exit_code: int) -> None:
        if self.console is None:
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"run {self.run_id}", title_justify="left", show_edge=False)
        for column, justify in (("step", "left"), ("worker", "left"), ("status", "left"), ("attempts", "right"),
                                ("wall s", "right"), ("why", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for sid, tr in self.trace.items():
            why = (tr.error or {}).get("message") or tr.reason
            table.add_row(sid, self.m.steps[sid].worker, tr.status, str(len(tr.attempts)), f"{tr.wall_s:.2f}",
                          str(why)[:160])
        # A plain-text table when the console is not a terminal (CI logs, pipes); colour only on a TTY.
        Console(file=self.console, width=120 if not self.console.isatty() else None, highlight=False).print(table)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self._summary_counts().items()))
        self._say(f"run {self.run_id}: exit {exit_code} ({counts}); trace: {self.workdir / 'trace.json'}")


def _rewrite_prefix(value: Any, old: str, new: str) -> Any:
    """Strings equal to `old` or under `old/` get the `new` prefix instead (a predictable rewrite only)."""
    if isinstance(value, str):
        for sep in {os.sep, "/"}:
            if value == old:
                return new
            if value.startswith(old + sep):
                return new + value[len(old):]
        return value
    if isinstance(value, dict):
        return {k: _rewrite_prefix(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_prefix(v, old, new) for v in value]
    return value
