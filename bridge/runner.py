"""The reference runner: plan, skip what is committed and still verifies, run the rest with retries, commit
atomically, record everything.

Steps run one at a time in topological order. The decision for one step (`planner.Planner.decide`) and the
execution of one step (`execute.StepExecutor.execute`) are separate so a parallel scheduler can later call them
from worker slots. This module runs the whole: workdir, lock, recovery, the step loop, the records.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import report, workdir
from .answer import clip
from .events import EventLog
from .execute import RunContext, StepExecutor
from .lock import WorkdirLock, WorkdirLocked
from .manifest import LoadedManifest
from .planner import Decision, Planner, SelectionError
from .proctree import stop_leftover
from .report import StepTrace
from .safefs import UnsafePath
from .schemas import SchemaMissing, SchemaStore
from .state import StateDB
from .worker_client import WorkerIdentity, worker_env

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID = 2
EXIT_LOCKED = 3
EXIT_SETUP = 4
EXIT_INTERRUPTED = 130
RUN_STATUS = {EXIT_OK: "ok", EXIT_INTERRUPTED: "interrupted"}  # anything else: "failed" ("error": an exception)


@dataclass
class RunOptions:
    force: set[str] = field(default_factory=set)
    only: set[str] = field(default_factory=set)
    until: set[str] = field(default_factory=set)
    dry_run: bool = False
    explain: bool = False
    events_stdout: bool = False


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
        self.wd = workdir.Workdir(loaded.workdir)
        self.env = worker_env()
        self.console = console
        self.events_mirror = events_mirror
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.trace: dict[str, StepTrace] = {}
        self.state: StateDB | None = None
        self.planner: Planner | None = None
        self.events: EventLog | None = None
        self._current: str | None = None  # the step being decided or executed (for an uncaught exception)

    @property
    def workdir(self) -> Path:
        return self.wd.root

    # ---------------------------------------------------------------------------------------------- api
    def run(self) -> int:
        try:
            self.wd = workdir.prepare(self.m.workdir)
        except (workdir.WorkdirUnusable, UnsafePath) as exc:
            self._say(f"[unusable workdir] {exc}")
            return EXIT_INVALID
        if self.opts.dry_run:
            return self._dry_run()
        lock = WorkdirLock(self.wd.lock)
        try:
            lock.acquire()
        except WorkdirLocked as exc:
            self._say(f"[refused] {exc}")
            return EXIT_LOCKED
        except UnsafePath as exc:
            self._say(f"[unusable workdir] {exc}")
            return EXIT_INVALID
        try:
            return self._locked_run()
        finally:
            lock.release()

    # --------------------------------------------------------------------------------------------- run
    def _open_state(self) -> None:
        self.state = StateDB(self.wd.state_db, self.wd.results)
        self.planner = Planner(self.m, self.state, force=self.opts.force, env=self.env, cancel=self.cancel)

    def _select(self) -> list[str]:
        return self.planner.select(self.opts.only, self.opts.until)

    def _locked_run(self) -> int:
        started = time.monotonic()
        self._open_state()
        self.events = EventLog(self.wd.events, self.run_id, self.events_mirror)
        self.events.listeners.append(self._human)
        try:
            exit_code = self._run_body()
        except BaseException as exc:
            # The real outcome, everywhere: a KeyboardInterrupt is an interruption (130); anything else is a
            # runner error, and the process exits 1 with the traceback, so the records say 1 and "error".
            interrupted = isinstance(exc, KeyboardInterrupt)
            self._record_exception(exc, "interrupted" if interrupted else "failed")
            self._finish(started, EXIT_INTERRUPTED if interrupted else EXIT_STEP_FAILED,
                         "interrupted" if interrupted else "error")
            raise
        self._finish(started, exit_code, RUN_STATUS.get(exit_code, "failed"))
        return exit_code

    def _finish(self, started: float, exit_code: int, status: str) -> None:
        try:
            self.state.end_run(self.run_id, status, exit_code)
            self._write_trace(exit_code, status, time.monotonic() - started)
            self.events.emit("run_end", status=status, exit_code=exit_code,
                             wall_s=round(time.monotonic() - started, 3), summary=report.status_counts(self.trace))
            self._print_summary(exit_code)
        finally:
            self.events.close()
            self.state.close()

    def _record_exception(self, exc: BaseException, step_status: str) -> None:
        """Best effort (the exception itself must surface): the step in progress and its attempt get it."""
        kind = "interrupted" if step_status == "interrupted" else "runner_error"
        error = {"kind": kind, "message": clip(f"{type(exc).__name__}: {exc}"), "retryable": False, "exit_code": None}
        try:
            self.state.settle_running(self.run_id, step_status, error)
            if self._current is not None:
                tr = self.trace[self._current]
                if tr.status == "pending":
                    tr.status, tr.error = step_status, error
                    self.state.mark_failed(self._current, tr.cache_key, error, status=step_status)
        except Exception:  # noqa: BLE001 - never hide the original exception behind a second one
            pass

    def _run_body(self) -> int:
        try:
            self.schemas.envelope()
        except SchemaMissing as exc:
            self._say(f"[setup error] {exc}")
            return EXIT_SETUP
        self.state.start_run(self.run_id, str(self.m.path), self._options_dict())
        self._recover_previous_run()
        self._clean_scratch()
        self.events.emit("run_start", manifest=str(self.m.path), workdir=str(self.workdir),
                         steps=list(self.m.order), options=self._options_dict(), pid=os.getpid())
        try:
            selected = self._select()
        except SelectionError as exc:
            self._say(f"[invalid selection] {exc}")
            return EXIT_INVALID
        return self._execute_all(selected)

    def _recover_previous_run(self) -> None:
        """Attempts a dead runner left `running` become abandoned; a worker of theirs still alive is stopped."""
        grace_s = self.m.manifest.defaults.kill_grace_s
        for left in self.state.recover_abandoned():
            stopped = bool(left.worker_pid) and stop_leftover(left.worker_pid, left.worker_started, grace_s)
            self.events.emit("attempt_abandoned", step=left.step_id, attempt=left.attempt, previous_run=left.run_id,
                             worker_pid=left.worker_pid, worker_stopped=stopped,
                             message="the previous runner stopped while this attempt ran")

    def _clean_scratch(self) -> None:
        workdir.clean_scratch(self.wd)
        self.state.prune_result_files()

    def _execute_all(self, selected: list[str]) -> int:
        for sid in self.m.order:
            if sid not in selected:
                self.trace[sid] = StepTrace(status="not_selected", optional=self.m.steps[sid].optional)
        executor = StepExecutor(RunContext(m=self.m, wd=self.wd, state=self.state, events=self.events,
                                           schemas=self.schemas, env=self.env, cancel=self.cancel,
                                           run_id=self.run_id, wait=self._wait, rng=self.rng))
        for sid in selected:
            if self.cancel.is_set():
                break
            self._current = sid
            tr = self.trace[sid] = StepTrace(optional=self.m.steps[sid].optional)
            t0 = time.monotonic()
            decision = self.planner.decide(sid)
            if self.opts.explain:
                self._say(f"{decision.action:<7} {sid}: {decision.reason}")
            tr.reason, tr.cache_key = decision.reason, decision.key
            if decision.action == "fail" and self.cancel.is_set():
                break
            self._act(decision, tr, executor)
            tr.wall_s = round(time.monotonic() - t0, 4)
        self._current = None
        if self.cancel.is_set():
            return EXIT_INTERRUPTED
        hard = [s for s, t in self.trace.items() if t.status in ("failed", "skipped") and not self._tolerated(s)]
        return EXIT_STEP_FAILED if hard else EXIT_OK

    def _act(self, decision: Decision, tr: StepTrace, executor: StepExecutor) -> None:
        sid, step = decision.step, self.m.steps[decision.step]
        if decision.action == "skip":
            self.planner.use_committed(sid, decision.record)
            self.state.mark_cache_hit(sid)
            tr.status, tr.cache_hit = "cached", True
            self.events.emit("step_skipped", step=sid, reason=decision.reason, cache_hit=True, key=decision.key)
        elif decision.action == "blocked":
            tr.status = "skipped"
            self.planner.failed[sid] = decision.reason
            self.events.emit("step_skipped", step=sid, reason=decision.reason, cache_hit=False)
        elif decision.action == "fail":
            tr.status = "failed"
            tr.error = {"kind": decision.kind, "message": decision.reason, "retryable": False,
                        "exit_code": decision.exit_code}
            self.planner.failed[sid] = decision.reason
            self.state.mark_failed(sid, decision.key, tr.error)
            self.events.emit("step_failed", step=sid, attempts=0, optional=step.optional,
                             why=f"'{decision.kind}' is not retried", **tr.error)
        else:
            committed = executor.execute(step, decision.key, decision.components, decision.args or {},
                                         decision.reason, tr)
            if committed is not None:
                self.planner.results[sid], self.planner.keys[sid] = committed.result, committed.key
            elif tr.status == "failed":
                self.planner.failed[sid] = f"{tr.error['kind']}: {tr.error['message'][:200]}"

    def _tolerated(self, sid: str) -> bool:
        """A failure (or a skip) that does not fail the run: the step, or the upstream that blocked it, is optional."""
        if self.m.steps[sid].optional:
            return True
        tr = self.trace[sid]
        if tr.status != "skipped":
            return False
        blockers = [d for d in self.m.ancestors(sid) if self.trace.get(d) and self.trace[d].status == "failed"]
        return bool(blockers) and all(self.m.steps[d].optional for d in blockers)

    def _wait(self, seconds: float) -> None:
        """The backoff between attempts; the default waits on the cancel event, so Ctrl-C cuts it short."""
        if self._sleep is not None:
            self._sleep(seconds)
        elif seconds > 0:
            self.cancel.wait(seconds)

    # ---------------------------------------------------------------------------------------- dry run
    def _dry_run(self) -> int:
        self._open_state()
        try:
            try:
                selected = self._select()
            except SelectionError as exc:
                self._say(f"[invalid selection] {exc}")
                return EXIT_INVALID
            for d in self.planner.plan(selected):
                self._say(f"{d.action:<7} {d.step}: {d.reason}")
                if self.events_mirror:
                    self.events_mirror.write(json.dumps({"event": "plan", "step": d.step, "action": d.action,
                                                         "reason": d.reason, "key": d.key}) + "\n")
            return EXIT_OK
        finally:
            self.state.close()

    # -------------------------------------------------------------------------------------- reporting
    def _options_dict(self) -> dict[str, Any]:
        return {"force": sorted(self.opts.force), "only": sorted(self.opts.only), "until": sorted(self.opts.until),
                "dry_run": self.opts.dry_run, "explain": self.opts.explain}

    def _write_trace(self, exit_code: int, status: str, wall_s: float) -> None:
        report.write_trace(self.wd.trace, {
            "run_id": self.run_id, "manifest": str(self.m.path), "workdir": str(self.workdir),
            "exit_code": exit_code, "status": status, "wall_s": round(wall_s, 3),
            "workers": {w: (i.as_dict() if isinstance(i, WorkerIdentity) else {"error": str(i)})
                        for w, i in (self.planner.identities.items() if self.planner else ())},
            "steps": {sid: t.as_dict() for sid, t in self.trace.items()}})

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.write(text + "\n")
            self.console.flush()

    def _human(self, ev: dict[str, Any]) -> None:
        line = report.human_line(ev) if self.console is not None else None
        if line:
            self._say(line)

    def _print_summary(self, exit_code: int) -> None:
        if self.console is None:
            return
        rows = [(sid, self.m.steps[sid].worker, tr) for sid, tr in self.trace.items()]
        report.print_summary(self.console, f"run {self.run_id}", rows)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(report.status_counts(self.trace).items()))
        self._say(f"run {self.run_id}: exit {exit_code} ({counts}); trace: {self.wd.trace}")
