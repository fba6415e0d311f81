"""Executing one step: attempts with retries and backoff, then the atomic commit (docs/runner.md, Execution)."""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from . import safefs
from .answer import WORKER_KINDS, AttemptOutcome
from .events import EventLog
from .manifest import LoadedManifest, RetryPolicy, Step
from .refs import map_strings
from .report import StepTrace
from .schemas import SchemaStore
from .state import AttemptEnd, StateDB
from .workdir import Workdir
from .worker_client import AttemptFiles, run_attempt


@dataclass
class RunContext:
    """What executing a step needs from the run."""

    m: LoadedManifest
    wd: Workdir
    state: StateDB
    events: EventLog
    schemas: SchemaStore
    env: dict[str, str]
    cancel: threading.Event
    run_id: str
    wait: Callable[[float], None]
    rng: random.Random


@dataclass
class Committed:
    result: Any
    key: str
    directory: str


class StepExecutor:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def execute(self, step: Step, key: str, components: dict[str, Any], args: dict[str, Any],
                reason: str, tr: StepTrace) -> Committed | None:
        """Attempts until a commit, a final failure or an interruption; `tr` records what happened."""
        ctx = self.ctx
        policy = step.retry_policy(ctx.m.manifest.defaults)
        timeout_s = ctx.m.timeout_s(step)
        ctx.state.mark_running(step.id, key)
        ctx.events.emit("step_start", step=step.id, worker=step.worker, reason=reason, key=key,
                        max_attempts=policy.max_attempts, timeout_s=timeout_s)
        attempt = 0
        while True:
            attempt += 1
            outcome, committed = self._attempt(step, key, components, args, attempt, timeout_s, tr)
            if committed is not None:
                tr.status = "committed"
                ctx.events.emit("step_committed", step=step.id, attempts=attempt, key=key,
                                committed_dir=committed.directory,
                                outputs=len((outcome.envelope or {}).get("outputs") or []))
                return committed
            if outcome.kind == "interrupted":
                self._interrupted(step.id, key, attempt, outcome, tr)
                return None
            if _should_retry(outcome, policy.retry_on) and attempt < policy.max_attempts:
                self._back_off(step.id, attempt, outcome, policy)
                if ctx.cancel.is_set():  # Ctrl-C during the backoff
                    self._interrupted(step.id, key, attempt, outcome, tr)
                    return None
                continue
            self._give_up(step, key, attempt, outcome, policy, tr)
            return None

    def _attempt(self, step: Step, key: str, components: dict[str, Any], args: dict[str, Any], attempt: int,
                 timeout_s: float, tr: StepTrace) -> tuple[AttemptOutcome, Committed | None]:
        ctx, sid = self.ctx, step.id
        tag = f"{sid}-{attempt}-{uuid.uuid4().hex[:8]}"
        staging = ctx.wd.staging / tag
        staging.mkdir(exist_ok=True)  # the name is random: it exists only when prepared on purpose (tests do)
        safefs.refuse_link(staging)  # ... and then it must be a real directory, never a link to elsewhere
        staging = staging.resolve()
        files = AttemptFiles(args_file=ctx.wd.attempts / tag / "args.json",
                             stderr_log=ctx.wd.attempts / tag / "stderr.log", staging_dir=staging)
        prefix = ctx.m.worker_argv(step.worker)
        row = ctx.state.start_attempt(ctx.run_id, sid, attempt, key, str(staging))
        ctx.events.emit("attempt_start", step=sid, attempt=attempt, staging_dir=str(staging),
                        argv=prefix + ["--input", str(files.args_file)])
        outcome = run_attempt(prefix, {**args, "output_dir": str(staging)}, files=files,
                              cwd=ctx.m.base_dir, env=ctx.env, schemas=ctx.schemas, worker=step.worker,
                              timeout_s=timeout_s, kill_grace_s=ctx.m.manifest.defaults.kill_grace_s,
                              cancel=ctx.cancel, on_event=self._relay(sid, attempt),
                              on_start=lambda pid: self._record_worker(row, pid))
        committed = None
        if outcome.ok:
            try:
                committed = self._commit(sid, staging, outcome, key, components, row)
            except OSError as exc:
                outcome = AttemptOutcome(ok=False, kind="commit_failed", message=f"could not commit: {exc}",
                                         exit_code=outcome.exit_code, wall_s=outcome.wall_s,
                                         peak_rss_mb=outcome.peak_rss_mb)
        if committed is None:
            ctx.state.end_attempt(row, _attempt_end(outcome))
            safefs.remove_entry(staging)
        record = {"attempt": attempt, "status": _attempt_status(outcome), "exit_code": outcome.exit_code,
                  "error_kind": outcome.kind, "message": outcome.message or None, "wall_s": outcome.wall_s,
                  "peak_rss_mb": outcome.peak_rss_mb, "warnings": outcome.warnings}
        tr.attempts.append(record)
        ctx.events.emit("attempt_end", step=sid, **record)
        return outcome, committed

    def _record_worker(self, row: int, pid: int) -> None:
        """The worker's pid and start time, so that a later runner can stop it if it outlives this one."""
        if pid <= 0:  # a faked process (tests)
            return
        try:
            started = psutil.Process(pid).create_time()
        except (psutil.Error, ValueError):
            started = None
        self.ctx.state.set_attempt_worker(row, pid, started)

    def _relay(self, sid: str, attempt: int) -> Callable[[dict[str, Any]], None]:
        """Worker stderr events become `progress` / `worker_log` / `worker_event` run events."""

        def relay(ev: dict[str, Any]) -> None:
            name = {"progress": "progress", "log": "worker_log"}.get(ev["event"], "worker_event")
            payload = {k: v for k, v in ev.items() if k not in ("event", "ts", "run_id", "step", "attempt")}
            self.ctx.events.emit(name, step=sid, attempt=attempt, worker_ts=ev.get("ts"), **payload)

        return relay

    def _interrupted(self, sid: str, key: str, attempt: int, outcome: AttemptOutcome, tr: StepTrace) -> None:
        tr.status, tr.error = "interrupted", outcome.error_dict()
        self.ctx.state.mark_failed(sid, key, outcome.error_dict(), status="interrupted")
        self.ctx.events.emit("step_interrupted", step=sid, attempt=attempt)

    def _back_off(self, sid: str, attempt: int, outcome: AttemptOutcome, policy: RetryPolicy) -> None:
        delay = policy.backoff_s[min(attempt - 1, len(policy.backoff_s) - 1)]
        delay *= 1 + self.ctx.rng.uniform(0, policy.jitter_fraction)
        self.ctx.events.emit("retry_scheduled", step=sid, attempt=attempt, next_attempt=attempt + 1,
                             delay_s=round(delay, 3), error_kind=outcome.kind, message=outcome.message)
        self.ctx.wait(delay)

    def _give_up(self, step: Step, key: str, attempt: int, outcome: AttemptOutcome, policy: RetryPolicy,
                 tr: StepTrace) -> None:
        tr.status, tr.error = "failed", outcome.error_dict()
        self.ctx.state.mark_failed(step.id, key, outcome.error_dict())
        if outcome.kind not in policy.retry_on:
            why = f"'{outcome.kind}' is not retried"
        elif not _should_retry(outcome, policy.retry_on):
            why = "the worker said retryable=false"
        else:
            why = "retries exhausted"
        self.ctx.events.emit("step_failed", step=step.id, attempts=attempt, optional=step.optional, why=why,
                             **outcome.error_dict())

    def _commit(self, sid: str, staging: Path, outcome: AttemptOutcome, key: str, components: dict[str, Any],
                row: int) -> Committed:
        """Atomic rename of the staging dir into steps/ID, then the durable record (see docs/runner.md)."""
        wd = self.ctx.wd
        envelope = outcome.envelope or {}
        final = wd.steps.resolve() / sid
        result = rewrite_prefix(envelope.get("result"), str(staging), str(final))
        outputs = rewrite_prefix(envelope.get("outputs") or [], str(staging), str(final))
        trash = None
        if os.path.lexists(final):
            trash = wd.trash / f"{sid}-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)  # a rename moves a planted link itself, never what it points to
        os.replace(staging, final)
        self.ctx.state.commit_step(sid, key, components, result, outputs, str(final), row, _attempt_end(outcome))
        if trash is not None:
            safefs.remove_entry(trash)
        return Committed(result=result, key=key, directory=str(final))


def _should_retry(outcome: AttemptOutcome, retry_on: list[str]) -> bool:
    if outcome.kind not in retry_on:
        return False
    if outcome.kind in WORKER_KINDS:
        return outcome.retryable  # the worker knows best; it may say a transient-looking error is final
    return True


def _attempt_status(outcome: AttemptOutcome) -> str:
    if outcome.ok:
        return "committed"
    return "interrupted" if outcome.kind == "interrupted" else "failed"


def _attempt_end(outcome: AttemptOutcome) -> AttemptEnd:
    return AttemptEnd(status=_attempt_status(outcome), exit_code=outcome.exit_code, error_kind=outcome.kind,
                      message=outcome.message or None, retryable=None if outcome.ok else outcome.retryable,
                      wall_s=outcome.wall_s, peak_rss_mb=outcome.peak_rss_mb)


def rewrite_prefix(value: Any, old: str, new: str) -> Any:
    """Strings equal to `old` or under `old/` get the `new` prefix instead (a predictable rewrite only)."""

    def rewrite(text: str) -> str:
        for sep in {os.sep, "/"}:
            if text == old:
                return new
            if text.startswith(old + sep):
                return new + text[len(old):]
        return text

    return map_strings(value, rewrite)
