"""The reference runner: plan, skip what is committed and still verifies, run the rest concurrently with
retries, commit atomically, record everything.

This module runs the whole: workdir, lock, state format, recovery, selection, then hands the selected steps
to the coordinator (coordinator.py), which decides units (planner.py), queues them for slots (scheduler.py,
resources.py) and runs their attempts through an executor (executor.py, warm_pool.py); then the records
(run_records.py). A dry run only says the plan (dry_run.py).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import dry_run, gate, machine, progress, run_records, workdir
from .coordinator import Coordinator, RunContext
from .events import EventLog
from .executor import LocalExecutor
from .lock import WorkdirLock, WorkdirLocked
from .manifest import LoadedManifest
from .planner import Planner, SelectionError
from .proctree import stop_leftover
from .report import StepTrace
from .resources import Gpu, SlotPool
from .run_records import RunRecords
from .safefs import UnsafePath
from .scheduler import Scheduler
from .schemas import SchemaMissing, SchemaStore
from .state import StateDB, StateFormatError
from .states import State
from .worker_client import worker_env

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
    jobs: int = 1  # the CLI's default is the CPU count
    gpus: list[Gpu] | None = None  # None: detect (NVML, else nvidia-smi)
    warm: bool = True  # keep --serve workers for workers that advertise it
    warm_idle_s: float = 60.0
    quiet: bool = False
    executor: str = "local"  # or "ray" (bridge/ray_executor.py)
    ray: Any = None  # ray_executor.RayOptions when executor is "ray"


class Runner:
    def __init__(self, loaded: LoadedManifest, options: RunOptions | None = None, *,
                 schemas: SchemaStore | None = None,
                 console: TextIO | None = None, events_mirror: TextIO | None = None,
                 cancel: threading.Event | None = None, rng: random.Random | None = None):
        self.m = loaded
        self.opts = options or RunOptions()
        self.schemas = schemas or SchemaStore()
        self.cancel = cancel or threading.Event()
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
        self.slots: SlotPool | None = None
        self.coordinator: Coordinator | None = None
        self.display: progress.PlainLines | progress.RichProgress | None = None
        self._ray_owned = False  # this runner connected to Ray (and disconnects at the end)
        self.records = RunRecords(self)

    @property
    def workdir(self) -> Path:
        return self.wd.root

    # ---------------------------------------------------------------------------------------------- api
    def run(self) -> int:
        try:
            self.wd = workdir.prepare(self.m.workdir)
        except (workdir.WorkdirUnusable, UnsafePath) as exc:
            self.say(f"[unusable workdir] {exc}")
            return EXIT_INVALID
        try:
            if self.opts.executor == "ray":
                gpu_gb = self.opts.ray.gpu_gb if self.opts.ray is not None else None
                self.slots = machine.cluster_slot_pool(self.m, self.opts.jobs, gpu_gb)
            else:
                self.slots = machine.slot_pool(self.m, self.opts.jobs, self.opts.gpus, self.env)
        except machine.ResourcesImpossible as exc:
            self.say(f"[resources] {exc}")
            return EXIT_INVALID
        if self.opts.dry_run:
            return self._dry_run()
        lock = WorkdirLock(self.wd.lock)
        try:
            lock.acquire()
        except WorkdirLocked as exc:
            self.say(f"[refused] {exc}")
            return EXIT_LOCKED
        except UnsafePath as exc:
            self.say(f"[unusable workdir] {exc}")
            return EXIT_INVALID
        try:
            if self.opts.executor == "ray" and not self._connect_ray():
                return EXIT_SETUP
            return self._locked_run()
        finally:
            if self._ray_owned:  # this runner's Ray connection (and the local Ray it may have started)
                import ray

                ray.shutdown()
            lock.release()

    # --------------------------------------------------------------------------------------------- run
    def _open_state(self) -> None:
        self.state = StateDB(self.wd.state_db, self.wd.results, snapshot=self.opts.dry_run)
        self.planner = Planner(self.m, self.state, force=self.opts.force, env=self.env, cancel=self.cancel)

    def _select(self) -> list[str]:
        return self.planner.select(self.opts.only, self.opts.until)

    def _locked_run(self) -> int:
        started = time.monotonic()
        try:
            self._open_state()
        except StateFormatError as exc:
            self.say(f"[unusable workdir] {exc}")
            return EXIT_INVALID
        self.events = EventLog(self.wd.events, self.run_id, self.events_mirror)
        self.display = progress.for_console(self.console, self.opts.quiet, len(self.m.order))
        if self.display is not None:
            self.events.listeners.append(self.display)
        try:
            exit_code = self._run_body()
        except BaseException as exc:
            # The real outcome, everywhere: a KeyboardInterrupt is an interruption (130); anything else is a
            # runner error, and the process exits 1 with the traceback, so the records say 1 and "error".
            interrupted = isinstance(exc, KeyboardInterrupt)
            self.records.record_exception(exc, "interrupted" if interrupted else "failed")
            self.records.finish(started, EXIT_INTERRUPTED if interrupted else EXIT_STEP_FAILED,
                         "interrupted" if interrupted else "error")
            raise
        self.records.finish(started, exit_code, RUN_STATUS.get(exit_code, "failed"))
        return exit_code

    def _run_body(self) -> int:
        try:
            self.schemas.envelope()
        except SchemaMissing as exc:
            self.say(f"[setup error] {exc}")
            return EXIT_SETUP
        self.state.start_run(self.run_id, str(self.m.path), self.records.options())
        self._recover_previous_run()
        self._clean_scratch()
        self.events.emit("run_start", manifest=str(self.m.path), workdir=str(self.workdir),
                         steps=list(self.m.order), options=self.records.options(), params=self.m.params,
                         pid=os.getpid())
        try:
            selected = self._select()
        except SelectionError as exc:
            self.say(f"[invalid selection] {exc}")
            return EXIT_INVALID
        return self._execute_all(selected)

    def _recover_previous_run(self) -> None:
        """Attempts a dead runner left `running` become abandoned; a worker of theirs still alive is stopped."""
        grace_s = self.m.manifest.defaults.kill_grace_s
        for left in self.state.recover_abandoned():
            stopped = bool(left.worker_pid) and stop_leftover(left.worker_pid, left.worker_started, grace_s)
            item = {} if left.item < 0 else {"item": left.item}
            self.events.emit("attempt_abandoned", step=left.step_id, **item, attempt=left.attempt,
                             previous_run=left.run_id,
                             worker_pid=left.worker_pid, worker_stopped=stopped,
                             message="the previous runner stopped while this attempt ran")

    def _clean_scratch(self) -> None:
        workdir.clean_scratch(self.wd)
        self.state.prune_result_files()

    def _execute_all(self, selected: list[str]) -> int:
        for sid in self.m.order:
            if sid not in selected:
                self.trace[sid] = StepTrace(status=State.NOT_SELECTED, optional=self.m.steps[sid].optional)
        ctx = RunContext(m=self.m, wd=self.wd, state=self.state, events=self.events, schemas=self.schemas,
                         env=self.env, cancel=self.cancel, run_id=self.run_id, rng=self.rng, say=self.say,
                         explain=self.opts.explain)
        self.coordinator = Coordinator(ctx, self.planner, Scheduler(self.slots), self.trace, self._executor)
        if self.display is not None:
            self.display.expect(len(selected))
        if self.opts.explain:
            for _, _, line in gate.plan_lines(self.m.gated_by, self.m.steps, selected):
                self.say(f"gate    {line}")
        self.coordinator.run(selected)
        if self.cancel.is_set():
            return EXIT_INTERRUPTED
        return EXIT_STEP_FAILED if run_records.hard_failures(self.m, self.trace) else EXIT_OK

    def _executor(self, post):
        # Idle warm processes kept: the slot count, plus one per worker, so a pipeline whose steps take turns
        # (keyframe, check, clip, keyframe, ...) finds each model still loaded instead of evicting one per item.
        max_idle = self.slots.jobs + len({step.worker for step in self.m.steps.values()})
        identities = self.planner.identities if self.opts.warm else {}
        if self.opts.executor == "ray":  # Ray tasks and actors; Ray is imported only now
            from .ray_executor import RayExecutor, RayOptions

            return RayExecutor(post, self.schemas, self.cancel, self.m, self.opts.ray or RayOptions(), identities,
                               warm_idle_s=self.opts.warm_idle_s, max_idle=max_idle)
        if not self.opts.warm:
            return LocalExecutor(post, self.schemas, self.cancel)
        from .warm_pool import WarmPoolExecutor

        return WarmPoolExecutor(post, self.schemas, self.cancel, identities, idle_s=self.opts.warm_idle_s,
                                max_idle=max_idle, slots=self.slots)

    def _connect_ray(self) -> bool:
        from .ray_executor import RayOptions, RayUnavailable, connect

        try:
            self._ray_owned = connect(self.opts.ray or RayOptions())
        except RayUnavailable as exc:
            self.say(f"[setup error] {exc}")
            return False
        return True

    # ---------------------------------------------------------------------------------------- dry run
    def _dry_run(self) -> int:
        try:
            self._open_state()
        except (StateFormatError, sqlite3.Error) as exc:
            self.say(f"[unusable workdir] {exc}")
            return EXIT_INVALID
        try:
            try:
                selected = self._select()
            except SelectionError as exc:
                self.say(f"[invalid selection] {exc}")
                return EXIT_INVALID
            dry_run.say_plan(self.planner, self.m, selected, self.say, self.events_mirror)
            return EXIT_OK
        finally:
            self.state.close()

    # -------------------------------------------------------------------------------------- reporting
    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.write(text + "\n")
            self.console.flush()
