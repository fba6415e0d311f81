"""What follows the end of an attempt, inside the coordinator: commit the unit, retry it after a backoff, give
it up, or stop it for an interruption. Runs on the coordinator's thread, like every state.db write."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import execute, safefs
from .answer import AttemptOutcome
from .execute import Committed
from .states import State
from .units import UnitRun

if TYPE_CHECKING:
    from .coordinator import Coordinator


class AttemptSettler:
    def __init__(self, coordinator: Coordinator):
        self.co = coordinator

    def finished(self, run: UnitRun, outcome: AttemptOutcome, warm: bool) -> None:
        """An attempt ended: record it, then commit, retry, give up or stop."""
        self.co.scheduler.release(run.grant)
        run.grant = None
        committed, outcome = self._commit(run, outcome)
        record = _attempt_record(run, outcome, warm)
        run.trace.attempts.append(record)
        self.co.ctx.events.emit("attempt_end", **run.ids(), **record)
        if committed is not None:
            self._committed(run, outcome, committed)
        elif outcome.kind == "interrupted":
            self.interrupted(run, outcome)
        elif execute.should_retry(outcome, run.policy.retry_on) and run.attempt < run.policy.max_attempts:
            self._retry(run, outcome)
        else:
            self._give_up(run, outcome)

    def interrupted(self, run: UnitRun, outcome: AttemptOutcome | None) -> None:
        """The run was interrupted while `run` was in flight (None: before its next attempt started)."""
        error = (outcome.error_dict() if outcome is not None else
                 {"kind": "interrupted", "message": "the runner was interrupted before the next attempt",
                  "retryable": False, "exit_code": None})
        run.trace.status, run.trace.error = State.INTERRUPTED, error
        self.co.ctx.state.mark_failed(run.sid, run.decision.key, error, status=State.INTERRUPTED.value, item=run.item)
        self.co.ctx.events.emit("step_interrupted", **run.ids(), attempt=run.attempt)
        run.stop_clock()
        self.co.active.pop(run.node, None)  # not `done`: nothing that depends on it is decided any more

    def _commit(self, run: UnitRun, outcome: AttemptOutcome) -> tuple[Committed | None, AttemptOutcome]:
        """Commit a successful attempt (a failed commit becomes the attempt's failure); a failed attempt's end
        is recorded and its staging removed."""
        ctx, committed = self.co.ctx, None
        if outcome.ok:
            try:
                committed = execute.commit(ctx.wd, ctx.state, run.sid, run.item, run.files.staging_dir, outcome,
                                           run.decision.key, run.decision.components, run.row)
            except OSError as exc:
                outcome = AttemptOutcome(ok=False, kind="commit_failed", message=f"could not commit: {exc}",
                                         exit_code=outcome.exit_code, wall_s=outcome.wall_s,
                                         peak_rss_mb=outcome.peak_rss_mb)
        if committed is None:
            ctx.state.end_attempt(run.row, execute.attempt_end(outcome))
            safefs.remove_entry(run.files.staging_dir)
        return committed, outcome

    def _committed(self, run: UnitRun, outcome: AttemptOutcome, committed: Committed) -> None:
        run.trace.status = State.COMMITTED
        self.co.planner.use_result(run.sid, run.item, committed.result, committed.key)
        self.co.ctx.events.emit("step_committed", **run.ids(), attempts=run.attempt, key=committed.key,
                                committed_dir=committed.directory,
                                outputs=len((outcome.envelope or {}).get("outputs") or []))
        self._settle(run)

    def _retry(self, run: UnitRun, outcome: AttemptOutcome) -> None:
        ctx = self.co.ctx
        delay = execute.backoff_s(run.policy, run.attempt, ctx.rng.random())
        ctx.events.emit("retry_scheduled", **run.ids(), attempt=run.attempt, next_attempt=run.attempt + 1,
                        delay_s=round(delay, 3), error_kind=outcome.kind, message=outcome.message)
        run.trace.status = State.WAITING
        ctx.state.mark_waiting(run.sid, run.decision.key, item=run.item)
        step = ctx.m.steps[run.sid]
        self.co.scheduler.defer(run.node, step.resources, time.monotonic() + delay, step.worker)

    def _give_up(self, run: UnitRun, outcome: AttemptOutcome) -> None:
        ctx = self.co.ctx
        run.trace.status, run.trace.error = State.FAILED, outcome.error_dict()
        self.co.planner.failed[run.label] = f"{outcome.kind}: {outcome.message[:200]}"
        ctx.state.mark_failed(run.sid, run.decision.key, outcome.error_dict(), item=run.item)
        ctx.events.emit("step_failed", **run.ids(), attempts=run.attempt, optional=ctx.m.steps[run.sid].optional,
                        why=execute.why_given_up(outcome, run.policy), **outcome.error_dict())
        self._settle(run)

    def _settle(self, run: UnitRun) -> None:
        run.stop_clock()
        del self.co.active[run.node]
        self.co.unit_done(run.node)


def _attempt_record(run: UnitRun, outcome: AttemptOutcome, warm: bool) -> dict[str, Any]:
    """The attempt as the trace and the `attempt_end` event tell it."""
    return {"attempt": run.attempt, "status": execute.attempt_state(outcome).value,
            "exit_code": outcome.exit_code, "error_kind": outcome.kind, "message": outcome.message or None,
            "wall_s": outcome.wall_s, "peak_rss_mb": outcome.peak_rss_mb, "warnings": outcome.warnings,
            "warm": warm, "metrics": (outcome.envelope or {}).get("metrics"), **run.extra,
            **({"node": outcome.node} if outcome.node else {})}
