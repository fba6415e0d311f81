"""The coordinator: the one place that applies decisions and attempt outcomes to run state, results, events
and the trace. Event-driven: a unit is decided the moment its dependencies settle, started the moment a slot
is free, and its outcome is applied the moment its executor posts it (attempt_settler.py: commit, retry, give
up, stop). Executors run attempts on their own threads and only post plain values back (`executor.Message`),
so every state.db write happens here, in order, on one thread.

Graph nodes (scheduler): ("step", ID) for a step; for a foreach step also ("expand", ID), which turns its list
into items, and ("item", ID, i) per item, with ("step", ID) waiting for all of its items.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

import psutil

from . import execute
from .attempt_settler import AttemptSettler
from .executor import AttemptExecutor, AttemptRequest, Finished, Message, Started, WorkerEvent
from .foreach_steps import ForeachSteps
from .gate_keeper import GateKeeper
from .planner import Decision, Planner
from .report import StepTrace
from .resources import Grant, thread_env
from .scheduler import Scheduler
from .state import WHOLE_STEP
from .states import Action, State
from .units import RunContext, UnitRun

__all__ = ["Coordinator", "RunContext"]

#: How often the loop looks at the cancel event while nothing is posted.
_POLL_S = 0.1


class Coordinator:
    def __init__(self, ctx: RunContext, planner: Planner, scheduler: Scheduler, trace: dict[str, StepTrace],
                 make_executor: Callable[[Callable[[Message], None]], AttemptExecutor]):
        self.ctx = ctx
        self.planner = planner
        self.scheduler = scheduler
        self.trace = trace
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.executor = make_executor(self.inbox.put)
        self.active: dict[tuple, UnitRun] = {}  # decided to run and not settled: queued, running or backing off
        self.foreach = ForeachSteps(self)
        self.gates = GateKeeper(self)
        self.settler = AttemptSettler(self)
        self.position = {sid: i for i, sid in enumerate(ctx.m.order)}

    # the loop -----------------------------------------------------------------------------------------------
    def run(self, selected: list[str]) -> None:
        try:
            self._add_steps(selected)
            while self._turn():
                pass
            stuck = self.scheduler.never_ready()
            if stuck and not self.ctx.cancel.is_set():
                raise RuntimeError(f"scheduler bug: {len(stuck)} unit(s) never became ready, e.g. {stuck[:3]}")
            for tr in self.trace.values():
                if tr.status == State.PENDING:  # interrupted: a foreach step with items still to go
                    tr.status = State.INTERRUPTED
        except BaseException:
            self.ctx.cancel.set()  # the workers must not outlive a runner that failed
            raise
        finally:
            self.executor.close()

    def _add_steps(self, selected: list[str]) -> None:
        chosen = set(selected)
        for sid in selected:
            waits = [("step", d) for d in self.planner.unit_deps(sid) if d in chosen]
            source = self.ctx.m.stream_from.get(sid)
            if self.ctx.m.steps[sid].foreach:
                if source in chosen:
                    waits.append(("expand", source))
                self.scheduler.add(("expand", sid), waits, self.priority(sid))
            else:
                self.scheduler.add(("step", sid), waits, self.priority(sid))
        self.foreach.chosen = chosen
        self.gates.activate(chosen)

    def priority(self, sid: str, item: int = 0) -> tuple[int, int]:
        """Item first, then manifest order: earlier items flow downstream before later ones start."""
        return item, self.position[sid]

    def _turn(self) -> bool:
        """Decide what is ready, start what fits, apply one message. False once nothing is left to do."""
        cancel = self.ctx.cancel
        if not cancel.is_set():
            self._decide_and_start()
        if cancel.is_set():
            for node in self.scheduler.drop_queued():
                if node in self.active:
                    self.settler.interrupted(self.active[node], None)
        if not self.active:
            return False
        message = self._next_message()
        if message is not None:
            self._apply(message)
        return True

    def _next_message(self) -> Message | None:
        timeout = _POLL_S
        due = self.scheduler.next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, due - time.monotonic()))
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _decide_and_start(self) -> None:
        """Decide ready nodes while a slot is free (a decision waits for a slot, as its attempt will: a unit is
        decided with the latest upstream results, and an interrupted run leaves undecided units untouched)."""
        while True:
            self._start_what_fits()
            if self.ctx.cancel.is_set() or not self.scheduler.slots.cpu_free:
                return
            node = self.scheduler.pop_ready()
            if node is None:
                return
            self._decide(node)

    def _decide(self, node: tuple) -> None:
        kind, sid = node[0], node[1]
        if kind == "expand":
            self.foreach.expand(sid)
        elif kind == "item":
            d = self.planner.decide(sid, item=node[2], item_value=self.foreach.value(sid, node[2]))
            self.decided(node, d if sid in self.planner.force else self.foreach.reuse.reuse(d))
        elif self.ctx.m.steps[sid].foreach:
            self.foreach.settle(sid)
        else:
            self.decided(node, self.planner.decide(sid))

    # decisions ------------------------------------------------------------------------------------------------
    def unit_trace(self, sid: str, item: int) -> StepTrace:
        optional = self.ctx.m.steps[sid].optional
        if item == WHOLE_STEP:
            return self.trace.setdefault(sid, StepTrace(optional=optional))
        step_trace = self.trace.setdefault(sid, StepTrace(optional=optional, items={}))
        return step_trace.items.setdefault(item, StepTrace(optional=optional))

    def decided(self, node: tuple, d: Decision) -> None:
        if d.action == Action.FAIL and self.ctx.cancel.is_set():
            return  # `--describe` was interrupted: not a failure of this step
        ctx, sid, item = self.ctx, d.step, d.item
        ids = {"step": sid} if item == WHOLE_STEP else {"step": sid, "item": item}
        tr = self.unit_trace(sid, item)
        tr.reason, tr.cache_key = d.reason, d.key
        if ctx.explain:
            ctx.say(f"{d.action.value:<7} {d.label}: {d.reason}")
        if d.action != Action.RUN:
            tr.status = d.action.leads_to  # cached | skipped | failed
        if d.action == Action.SKIP:
            self.planner.use_committed(sid, d.record)
            ctx.state.mark_cache_hit(sid, item)
            tr.cache_hit = True
            ctx.events.emit("step_skipped", **ids, reason=d.reason, cache_hit=True, key=d.key)
        elif d.action == Action.BLOCKED:
            self.planner.failed[d.label] = d.reason
            ctx.events.emit("step_skipped", **ids, reason=d.reason, cache_hit=False)
        elif d.action == Action.FAIL:
            tr.error = {"kind": d.kind, "message": d.reason, "retryable": False, "exit_code": d.exit_code}
            self.planner.failed[d.label] = d.reason
            ctx.state.mark_failed(sid, d.key, tr.error, item=item)
            ctx.events.emit("step_failed", **ids, attempts=0, optional=ctx.m.steps[sid].optional,
                            why=f"'{d.kind}' is not retried", **tr.error)
        else:
            self._queue(node, d, tr)
            return
        self.unit_done(node)

    def unit_done(self, node: tuple) -> None:
        """`node` settled: its dependants may go, unless a quality gate puts it back (a regeneration)."""
        if not self.gates.settled(node):
            self.scheduler.done(node)

    def _queue(self, node: tuple, d: Decision, tr: StepTrace) -> None:
        step = self.ctx.m.steps[d.step]
        run = UnitRun(node=node, sid=d.step, item=d.item, decision=d, trace=tr,
                      policy=step.retry_policy(self.ctx.m.manifest.defaults), timeout_s=self.ctx.m.timeout_s(step))
        self.active[node] = run
        tr.status = d.action.leads_to  # waiting (for a slot)
        self.ctx.state.mark_waiting(run.sid, d.key, item=run.item)
        self.ctx.events.emit("step_start", **run.ids(), worker=step.worker, reason=d.reason, key=d.key,
                             max_attempts=run.policy.max_attempts, timeout_s=run.timeout_s)
        self.scheduler.enqueue(node, step.resources, time.monotonic(), step.worker)

    # attempts -------------------------------------------------------------------------------------------------
    def _start_what_fits(self) -> None:
        while (got := self.scheduler.take_startable(time.monotonic())) is not None:
            node, grant, waited = got
            self._start_attempt(self.active[node], grant, waited)

    def _start_attempt(self, run: UnitRun, grant: Grant, waited_s: float) -> None:
        ctx = self.ctx
        step = ctx.m.steps[run.sid]
        run.attempt += 1
        run.grant = grant
        tag = run.sid if run.item == WHOLE_STEP else f"{run.sid}.{run.item}"
        run.files = execute.prepare_attempt(ctx.wd, tag, run.attempt)
        run.trace.status = State.RUNNING
        ctx.state.mark_running(run.sid, run.decision.key, item=run.item)
        staging = run.files.staging_dir
        run.row = ctx.state.start_attempt(ctx.run_id, run.sid, run.attempt, run.decision.key, str(staging),
                                          item=run.item, devices=grant.devices, queue_wait_s=round(waited_s, 4))
        run.extra = {"devices": grant.devices, "queue_wait_s": round(waited_s, 4)}
        prefix = ctx.m.worker_argv(step.worker)
        ctx.events.emit("attempt_start", **run.ids(), attempt=run.attempt, staging_dir=str(staging),
                        argv=prefix + ["--input", str(run.files.args_file)], **run.extra)
        self.executor.submit(AttemptRequest(
            unit=(run.sid, run.item), attempt=run.attempt, worker=step.worker, prefix=prefix,
            args={**(run.decision.args or {}), "output_dir": str(staging)}, files=run.files, cwd=ctx.m.base_dir,
            env={**ctx.env, **grant.env(), **thread_env(grant.cpu, self.scheduler.slots.jobs, ctx.env)},
            timeout_s=run.timeout_s,
            kill_grace_s=ctx.m.manifest.defaults.kill_grace_s, devices=grant.devices, grant=grant))

    def _apply(self, message: Message) -> None:
        sid, item = message.request.unit
        node = ("step", sid) if item == WHOLE_STEP else ("item", sid, item)
        run = self.active.get(node)
        if run is None or run.attempt != message.request.attempt:
            return  # a late message of an attempt already settled
        if isinstance(message, Started):
            self._record_worker(run.row, message.pid)
        elif isinstance(message, WorkerEvent):
            ev = message.event
            name = {"progress": "progress", "log": "worker_log", "placed": "attempt_placed"}.get(ev["event"], "worker_event")
            payload = {k: v for k, v in ev.items() if k not in ("event", "ts", "run_id", "step", "attempt", "item")}
            self.ctx.events.emit(name, **run.ids(), attempt=run.attempt, worker_ts=ev.get("ts"), **payload)
        elif isinstance(message, Finished):
            self.settler.finished(run, message.outcome, message.warm)

    def _record_worker(self, row: int | None, pid: int) -> None:
        """The worker's pid and start time, so that a later runner can stop it if it outlives this one."""
        if pid <= 0 or row is None:  # a faked process (tests)
            return
        try:
            started = psutil.Process(pid).create_time()
        except (psutil.Error, ValueError):
            started = None
        self.ctx.state.set_attempt_worker(row, pid, started)

    # after an uncaught exception ------------------------------------------------------------------------------
    def mark_unsettled(self, status: State, error: dict[str, Any]) -> None:
        """Units in flight when the runner failed get the real outcome in the trace (state.db: the runner)."""
        for run in self.active.values():
            if run.trace.status in (State.PENDING, State.WAITING, State.RUNNING):
                run.trace.status, run.trace.error = status, error
                self.ctx.state.mark_failed(run.sid, run.decision.key, error, status=status.value, item=run.item)
        for tr in self.trace.values():
            if tr.status == State.PENDING:  # a foreach step whose items were in flight
                tr.status = status
