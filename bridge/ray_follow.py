"""The head's side of one attempt on Ray: it waits for the attempt to be placed, relays its live events, takes
the raw answer and (data mode ship) the output chunks from the stream, and judges the answer here, as locally.

The stream is the one-shot task's (bridge/ray_task.py) or a warm actor's `run` (bridge/ray_actor.py); both
send `("event", ...)`, `("done", ...)` and `("chunk", ...)` messages. While it waits, it watches the runner's
cancel event (-> Interrupted) and whether the node is still alive (-> Lost).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ray_data, ray_task, safefs
from .answer import AttemptOutcome, classify, single_json
from .execute import rewrite_prefix
from .executor import AttemptRequest, WorkerEvent
from .ray_placement import TaskResources, unplaceable
from .serve_client import NoAnswer

if TYPE_CHECKING:
    from .ray_executor import RayExecutor

#: How often a waiting attempt looks at the cancel event.
POLL_S = 0.1
#: A task or actor not placed after this long, while the cluster lacks what it asks for, evicts an idle warm
#: actor holding some of that (its GPU, while its model stays loaded).
EVICT_AFTER_S = 0.5
#: The options of every streaming call (a task, an actor's `run`): at most 4 unconsumed objects (events, chunks)
#: run ahead of the head, the bound on memory in flight.
STREAM_OPTIONS = {"num_returns": "streaming", "_generator_backpressure_num_objects": 4}


class Lost(Exception):
    """The node or the Ray worker process of an attempt went away (or Ray failed the task)."""

    def __init__(self, message: str, node: dict[str, Any] | None = None):
        super().__init__(message)
        self.node = node  # where, when the attempt had no stream to follow yet (a warm actor starting)


class Interrupted(Exception):
    pass


def wait_ref(x: RayExecutor, ref: Any, node: dict[str, Any] | None, on_cancel: Callable[[], None],
             where: Callable[[str], str]) -> bool:
    """One poll: True when `ref` (an object ref or a stream) is ready. Raises Interrupted (after on_cancel) when
    the runner is interrupted, Lost when the node it runs on is dead."""
    ready, _ = x.ray.wait([ref], timeout=POLL_S)
    if x.cancel.is_set():
        on_cancel()
        raise Interrupted
    if not ready and node is not None and not x.node_alive(node["node_id"]):
        on_cancel()
        raise Lost(where("the cluster marked the node dead"))
    return bool(ready)


def wait_placed(x: RayExecutor, ready: Callable[[], bool], need: TaskResources,
                evict: Callable[[set[str]], bool]) -> bool:
    """Poll `ready` until the attempt runs on a node; False when no node can ever take it (checked every
    --placement-timeout-s: a cluster that is only busy is waited for). While the cluster lacks a resource that
    idle warm actors hold (GPUs, memory, custom), they are evicted one at a time (`evict`, True when one went)."""
    started = time.monotonic()
    deadline = started + x.opts.placement_timeout_s
    evict_at = started + EVICT_AFTER_S
    while not ready():
        now = time.monotonic()
        if now >= evict_at:
            evict_at = now + EVICT_AFTER_S
            short = x.short_of(need)
            if short and evict(short):
                deadline = now + x.opts.placement_timeout_s  # room is being made: the wait starts over
        if now >= deadline:
            if unplaceable(need.wanted(), x.ray.nodes()) is not None:
                return False
            deadline = now + x.opts.placement_timeout_s
    return True


def not_placed(x: RayExecutor, need: TaskResources, waited_s: float) -> AttemptOutcome:
    why = unplaceable(need.wanted(), x.ray.nodes()) or "the cluster changed while it waited"
    return AttemptOutcome(ok=False, kind="placement", retryable=False, wall_s=round(waited_s, 4), message=(
        f"not placed within --placement-timeout-s {x.opts.placement_timeout_s:g}: {why}"))


def lost_on(node: dict[str, Any] | None, text: str) -> str:
    """The message of a Lost attempt: where (the node, when known) and what happened."""
    where = f"node {node['node_id'][:12]} ({node['node_ip']})" if node else "a node"
    return f"lost on {where}: {text}"


def error_text(exc: Exception) -> str:
    """A Ray error as a message line (Ray's own text, which can run long, cut)."""
    return f"{type(exc).__name__}: {str(exc).strip()[:2000]}"


class Follow:
    """Reads one attempt's stream: live events, the raw answer, then (mode ship) the output chunks."""

    def __init__(self, executor: RayExecutor, request: AttemptRequest, stream: Any,
                 cancel: Callable[[], None], node: dict[str, Any] | None = None):
        self.x, self.request, self.stream, self._cancel_stream = executor, request, stream, cancel
        self.node = node
        self.answered = False  # the worker answered (a warm process that did not is dead)

    def placed(self, info: dict[str, Any], **extra: Any) -> None:
        """Where it runs (for the event, and for the trace's attempt record); `extra`: a warm actor's pid."""
        self.node = {**info, "data": self.x.opts.data, **extra}
        self.x.post(WorkerEvent(self.request, {"event": "placed", **self.node}))

    def ready(self) -> bool:
        return wait_ref(self.x, self.stream, self.node, self.cancel, self.where)

    def outcome(self) -> AttemptOutcome:
        while True:
            item = self.next()
            if item[0] == "event":
                self.x.post(WorkerEvent(self.request, item[1]))
            elif item[0] == "done":
                return self._answer(item[1])

    def _answer(self, done: dict[str, Any]) -> AttemptOutcome:
        if "start_error" in done:
            return AttemptOutcome(ok=False, kind="worker_unavailable", message=done["start_error"], node=self.node)
        ship = self.x.opts.data == "ship"
        if "no_answer" in done:
            if ship:
                safefs.write_new(self.request.files.stderr_log, done["stderr_log"])
            self._drain()
            outcome = NoAnswer(**done["no_answer"]).outcome(self.request.timeout_s)
            outcome.node = self.node
            return outcome
        self.answered = True
        proc = ray_task.process_result(done["proc"])
        staging = self.request.files.staging_dir
        problems: list[str] = []
        if ship:
            self.node["node_output_dir"] = done["node_output_dir"]
            problems = self._receive(done, staging, proc)
        else:
            self._drain()
        outcome = classify(proc, self.x.schemas, self.request.worker, staging, self.request.timeout_s)
        if outcome.ok and problems:
            outcome = AttemptOutcome(ok=False, kind="output_invalid", envelope=outcome.envelope,
                                     exit_code=outcome.exit_code, wall_s=outcome.wall_s,
                                     peak_rss_mb=outcome.peak_rss_mb, message=(
                                         "outputs shipped from the node do not match the envelope: "
                                         + "; ".join(problems[:5])))
        outcome.node = self.node
        return outcome

    def _receive(self, done: dict[str, Any], staging: Path, proc: Any) -> list[str]:
        """The outputs into staging; the envelope's node paths become staging paths; [problems]."""
        safefs.write_new(self.request.files.stderr_log, done["stderr_log"])
        sink = ray_data.StagingSink(staging)
        try:
            while (item := self.next(end_ok=True)) is not None:
                sink.write(item[1], item[2])
        except ray_data.ShipError as exc:
            self.cancel()
            return [str(exc)]
        finally:
            received = sink.close()
        doc, problem = single_json(proc.stdout)
        if problem is not None or not isinstance(doc, dict):
            return []  # classify names what is wrong with the answer itself
        doc = rewrite_prefix(doc, done["node_output_dir"], str(staging))
        proc.stdout = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        return ray_data.check_received(doc.get("outputs") or [], staging, received)

    def _drain(self) -> None:
        while self.next(end_ok=True) is not None:
            pass

    # the stream ---------------------------------------------------------------------------------------------
    def next(self, end_ok: bool = False) -> tuple | None:
        ray = self.x.ray
        while not self.ready():
            pass
        try:
            return ray.get(next(self.stream))
        except StopIteration:
            if end_ok:
                return None
            raise Lost(self.where("the Ray task ended before it answered")) from None
        except ray.exceptions.TaskCancelledError:
            raise Interrupted from None
        except ray.exceptions.RayError as exc:
            raise Lost(self.where(error_text(exc))) from None

    def where(self, text: str) -> str:
        return lost_on(self.node, text)

    def wait_ended(self, timeout_s: float) -> None:
        """After a cancel: give the task the time to stop its worker's tree (TERM, kill_grace_s, KILL)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _ = self.x.ray.wait([self.stream], timeout=POLL_S)
            if ready:
                try:
                    self.x.ray.get(next(self.stream))
                except Exception:  # noqa: BLE001 - StopIteration, TaskCancelledError: it has ended
                    return

    def cancel(self) -> None:
        try:
            self._cancel_stream()
        except Exception:  # noqa: BLE001 - already finished or gone
            pass
