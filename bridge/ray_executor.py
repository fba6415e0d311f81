"""`--executor ray`: each attempt is a Ray task placed on a node that has the step's resources (bridge/ray_task.py
runs the worker there exactly as locally). The runner process stays the head of the run: the scheduler, state.db,
the lock, commits, events and the trace never leave it, and the classification of the answer and the atomic
commit happen here, on the raw answer the task sends back.

Data modes (docs/scale-out.md): `shared`, the workdir is on a file system every node mounts and its paths are
used as they are; `ship`, the node gets the input files the args name, writes the outputs into a directory of
its own and sends them back through Ray's object store in bounded chunks, and the head writes them into the
staging directory, checking every output's size and sha256 against the envelope before the commit.

Ray is imported only here, and this module only when `--executor ray` is chosen. The runner connects (`connect`,
before anything runs, so an unreachable cluster is a setup error, exit 4) and disconnects.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ray_data, ray_task, safefs
from .answer import AttemptOutcome, classify, single_json
from .execute import rewrite_prefix
from .executor import AttemptRequest, AttemptThreads, Post, WorkerEvent
from .manifest import LoadedManifest
from .ray_placement import TaskResources, task_resources, unplaceable
from .schemas import SchemaStore
from .worker_client import write_args_file

DATA_MODES = ("ship", "shared")
#: How often a waiting attempt looks at the cancel event.
_POLL_S = 0.1
#: How often the head asks the cluster which nodes are alive while attempts run: Ray itself may take minutes to
#: fail the task of a node whose raylet was killed (measured: more than 90 s with 2.60).
NODE_CHECK_S = 1.0
#: How long a crash on a lost node waits for the cluster to mark that node dead, so the retry goes elsewhere.
NODE_DEATH_WAIT_S = 60.0
#: Unconsumed objects a task may run ahead of the head (events and chunks): the bound on memory in flight.
BACKPRESSURE_OBJECTS = 4


@dataclass
class RayOptions:
    address: str | None = None  # None: start a Ray instance on this machine; "auto": the one `ray start` made
    data: str = "ship"
    placement_timeout_s: float = 60.0
    gpu_gb: float | None = None  # --ray-gpu-gb: one GPU's memory; a step's vram_gb becomes a share of one GPU


class RayUnavailable(Exception):
    """The cluster cannot be reached (or Ray is not installed): a setup error, before anything runs."""


def connect(options: RayOptions) -> bool:
    """Connect this process to the cluster as Ray's driver; True when this call made the connection."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable('Ray is not installed: pip install "storybridge[ray]"') from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=options.address, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError: all mean "no cluster"
        raise RayUnavailable(f"cannot reach the Ray cluster at {options.address or 'a new local instance'}: "
                             f"{type(exc).__name__}: {exc}") from None
    return True


class _Lost(Exception):
    """The node or the Ray worker process of an attempt went away (or Ray failed the task)."""


class RayExecutor:
    def __init__(self, post: Post, schemas: SchemaStore, cancel: threading.Event, manifest: LoadedManifest,
                 options: RayOptions):
        import ray

        self.ray = ray
        self.post, self.schemas, self.cancel, self.m, self.opts = post, schemas, cancel, manifest, options
        self._remote = ray.remote(ray_task.attempt_on_node)
        self._has_gpus = any(n.get("Alive") and (n.get("Resources") or {}).get("GPU") for n in ray.nodes())
        self._threads = AttemptThreads(post, warm=False)
        self._alive_lock = threading.Lock()
        self._alive: tuple[float, set[str]] = (0.0, set())

    def node_alive(self, node_id: str) -> bool:
        """From a view of the cluster at most NODE_CHECK_S old, shared by all attempts."""
        with self._alive_lock:
            checked, alive = self._alive
            if time.monotonic() - checked >= NODE_CHECK_S:
                alive = {n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}
                self._alive = (time.monotonic(), alive)
        return node_id in alive

    def submit(self, request: AttemptRequest) -> None:
        self._threads.start(request, self._attempt)

    def close(self) -> None:
        self._threads.join()

    # one attempt --------------------------------------------------------------------------------------------
    def _attempt(self, request: AttemptRequest) -> AttemptOutcome:
        write_args_file(request.files, request.args)  # the record of what ran, as locally
        step = self.m.steps[request.unit[0]]
        need = task_resources(step.resources, step.fallback, self._has_gpus)
        task = self._remote.options(**need.ray_options(), num_returns="streaming", max_retries=0,
                                    _generator_backpressure_num_objects=BACKPRESSURE_OBJECTS
                                    ).remote(self._spec(request, need))
        follow = _Follow(self, request, task)
        started = time.monotonic()
        try:
            if not follow.wait_placed(need):
                return follow.not_placed(need, time.monotonic() - started)
            return follow.outcome()
        except _Lost as exc:
            if follow.node is not None:
                self._await_node_death(follow.node["node_id"])
            return AttemptOutcome(ok=False, kind="crash", retryable=True, node=follow.node,
                                  wall_s=round(time.monotonic() - started, 4), message=str(exc))
        except _Interrupted:
            follow.wait_ended(request.kill_grace_s + 5.0)
            return AttemptOutcome(ok=False, kind="interrupted", message="stopped: the runner was interrupted",
                                  node=follow.node, wall_s=round(time.monotonic() - started, 4))

    def _await_node_death(self, node_id: str) -> None:
        """A lost node can still count as alive for a while (its task saw the raylet go first): a retry placed
        then could land on it again. So the crash is reported once the cluster marks the node dead, or after
        NODE_DEATH_WAIT_S when it stays alive (the loss was the task's, not the node's)."""
        deadline = time.monotonic() + NODE_DEATH_WAIT_S
        while self.node_alive(node_id) and time.monotonic() < deadline and not self.cancel.is_set():
            time.sleep(NODE_CHECK_S)

    def _spec(self, request: AttemptRequest, need: TaskResources) -> dict[str, Any]:
        ship = self.opts.data == "ship"
        inputs = {}
        if ship:
            inputs = {text: ray_data.read_input(path)
                      for text, path in ray_data.input_files(request.args, request.cwd).items()}
        return {"prefix": request.prefix, "args": request.args, "args_file": str(request.files.args_file),
                "stderr_log": str(request.files.stderr_log), "cwd": str(request.cwd), "env": request.env,
                "timeout_s": request.timeout_s, "kill_grace_s": request.kill_grace_s, "ship": ship,
                "inputs": inputs, "num_gpus": need.num_gpus, "hide_gpus": need.hide_gpus, "threads": need.threads}


class _Follow:
    """Reads one task's stream: placement, live events, the raw answer, then (mode ship) the output chunks."""

    def __init__(self, executor: RayExecutor, request: AttemptRequest, task: Any):
        self.x, self.request, self.task = executor, request, task
        self.node: dict[str, Any] | None = None

    def wait_placed(self, need: TaskResources) -> bool:
        """True once the task runs on a node; False when no node can ever take it (checked every
        --placement-timeout-s: a cluster that is only busy is waited for)."""
        deadline = time.monotonic() + self.x.opts.placement_timeout_s
        while not self._ready():
            if time.monotonic() >= deadline:
                if unplaceable(need.wanted(), self.x.ray.nodes()) is not None:
                    return False
                deadline = time.monotonic() + self.x.opts.placement_timeout_s
        kind, info = self._next()
        self.node = {**info, "data": self.x.opts.data}
        self.x.post(WorkerEvent(self.request, {"event": "placed", **self.node}))
        return True

    def not_placed(self, need: TaskResources, waited_s: float) -> AttemptOutcome:
        why = unplaceable(need.wanted(), self.x.ray.nodes()) or "the cluster changed while it waited"
        self._cancel()
        return AttemptOutcome(ok=False, kind="placement", retryable=False, wall_s=round(waited_s, 4), message=(
            f"not placed within --placement-timeout-s {self.x.opts.placement_timeout_s:g}: {why}"))

    def outcome(self) -> AttemptOutcome:
        while True:
            item = self._next()
            if item[0] == "event":
                self.x.post(WorkerEvent(self.request, item[1]))
            elif item[0] == "done":
                return self._answer(item[1])

    def _answer(self, done: dict[str, Any]) -> AttemptOutcome:
        if "start_error" in done:
            return AttemptOutcome(ok=False, kind="worker_unavailable", message=done["start_error"], node=self.node)
        proc = ray_task.process_result(done["proc"])
        staging = self.request.files.staging_dir
        problems: list[str] = []
        if self.x.opts.data == "ship":
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
            while (item := self._next(end_ok=True)) is not None:
                sink.write(item[1], item[2])
        except ray_data.ShipError as exc:
            self._cancel()
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
        while self._next(end_ok=True) is not None:
            pass

    # the stream ---------------------------------------------------------------------------------------------
    def _ready(self) -> bool:
        ready, _ = self.x.ray.wait([self.task], timeout=_POLL_S)
        if self.x.cancel.is_set():
            self._cancel()
            raise _Interrupted
        if not ready and self.node is not None and not self.x.node_alive(self.node["node_id"]):
            self._cancel()
            raise _Lost(self._where("the cluster marked the node dead"))
        return bool(ready)

    def _next(self, end_ok: bool = False) -> tuple | None:
        ray = self.x.ray
        while not self._ready():
            pass
        try:
            return ray.get(next(self.task))
        except StopIteration:
            if end_ok:
                return None
            raise _Lost(self._where("the Ray task ended before it answered")) from None
        except ray.exceptions.TaskCancelledError:
            raise _Interrupted from None
        except ray.exceptions.RayError as exc:
            raise _Lost(self._where(f"{type(exc).__name__}: {str(exc).strip()[:2000]}")) from None

    def _where(self, text: str) -> str:
        node = f"node {self.node['node_id'][:12]} ({self.node['node_ip']})" if self.node else "a node"
        return f"lost on {node}: {text}"

    def wait_ended(self, timeout_s: float) -> None:
        """After a cancel: give the task the time to stop its worker's tree (TERM, kill_grace_s, KILL)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _ = self.x.ray.wait([self.task], timeout=_POLL_S)
            if ready:
                try:
                    self.x.ray.get(next(self.task))
                except Exception:  # noqa: BLE001 - StopIteration, TaskCancelledError: it has ended
                    return

    def _cancel(self) -> None:
        """Ray raises KeyboardInterrupt in the task, which stops the worker's tree (bridge/ray_task.py)."""
        try:
            self.x.ray.cancel(self.task)
        except Exception:  # noqa: BLE001 - already finished or gone
            pass


class _Interrupted(Exception):
    pass
