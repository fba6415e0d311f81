"""What a run records about itself at its end: state.db's run row, trace.json, the `run_end` event and the
console summary; after an uncaught exception, the real outcome of what was in flight. Also which failures
fail the run (an optional step's do not)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import report
from .answer import clip
from .manifest import LoadedManifest
from .report import StepTrace
from .states import State
from .worker_client import WorkerIdentity

if TYPE_CHECKING:
    from .runner import Runner


class RunRecords:
    def __init__(self, runner: Runner):
        self.r = runner

    def options(self) -> dict[str, Any]:
        """The run's options as state.db and the `run_start` event keep them."""
        opts, slots = self.r.opts, self.r.slots
        return {"force": sorted(opts.force), "only": sorted(opts.only), "until": sorted(opts.until),
                "dry_run": opts.dry_run, "explain": opts.explain, "jobs": opts.jobs,
                "gpus": [g.index for g in slots.gpus] if slots else None, "executor": opts.executor}

    def finish(self, started: float, exit_code: int, status: str) -> None:
        r = self.r
        try:
            r.state.end_run(r.run_id, status, exit_code)
            self._write_trace(exit_code, status, time.monotonic() - started)
            summary: dict[str, Any] = dict(report.status_counts(r.trace))
            if r.m.gated_by:
                summary["gate_never_passed"] = self.gate_never_passed()
            r.events.emit("run_end", status=status, exit_code=exit_code,
                          wall_s=round(time.monotonic() - started, 3), summary=summary)
            if r.display is not None:
                r.display.close()
            self._print_summary(exit_code)
        finally:
            r.events.close()
            r.state.close()

    def record_exception(self, exc: BaseException, step_status: str) -> None:
        """Best effort (the exception itself must surface): the step in progress and its attempt get it."""
        kind = "interrupted" if step_status == "interrupted" else "runner_error"
        error = {"kind": kind, "message": clip(f"{type(exc).__name__}: {exc}"), "retryable": False, "exit_code": None}
        try:
            if self.r.coordinator is not None:
                self.r.coordinator.mark_unsettled(State(step_status), error)
            self.r.state.settle_running(self.r.run_id, step_status, error)
        except Exception:  # noqa: BLE001 - never hide the original exception behind a second one
            pass

    def gate_never_passed(self) -> dict[str, list[int]]:
        """Gated step -> its items whose regenerations ran out without passing (the last candidate stands)."""
        return dict(self.r.coordinator.gates.never_passed) if self.r.coordinator is not None else {}

    def _write_trace(self, exit_code: int, status: str, wall_s: float) -> None:
        r = self.r
        report.write_trace(r.wd.trace, {
            "run_id": r.run_id, "manifest": str(r.m.path), "workdir": str(r.workdir),
            "params": r.m.params, "exit_code": exit_code, "status": status, "wall_s": round(wall_s, 3),
            "workers": {w: (i.as_dict() if isinstance(i, WorkerIdentity) else {"error": str(i)})
                        for w, i in (r.planner.identities.items() if r.planner else ())},
            "steps": {sid: t.as_dict() for sid, t in r.trace.items()},
            "gate_never_passed": self.gate_never_passed()})

    def _print_summary(self, exit_code: int) -> None:
        r = self.r
        if r.console is None:
            return
        if not r.opts.quiet:
            rows = [(sid, r.m.steps[sid].worker, r.trace[sid]) for sid in r.m.order if sid in r.trace]
            report.print_summary(r.console, f"run {r.run_id}", rows)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(report.status_counts(r.trace).items()))
        r.say(f"run {r.run_id}: exit {exit_code} ({counts}); trace: {r.wd.trace}")


def hard_failures(m: LoadedManifest, trace: dict[str, StepTrace]) -> list[str]:
    """The failed or skipped steps that fail the run."""
    return [sid for sid, t in trace.items() if t.status in ("failed", "skipped") and not _tolerated(m, trace, sid)]


def _tolerated(m: LoadedManifest, trace: dict[str, StepTrace], sid: str) -> bool:
    """A failure (or a skip) that does not fail the run: the step, or the upstream that blocked it, is optional."""
    if m.steps[sid].optional:
        return True
    tr = trace[sid]
    if tr.status != "skipped":
        return False
    blockers = [d for d in m.ancestors(sid) if trace.get(d) and trace[d].status == "failed"]
    return bool(blockers) and all(m.steps[d].optional for d in blockers)
