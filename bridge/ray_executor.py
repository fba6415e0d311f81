"""`--executor ray`: each attempt is a Ray task placed on a node that has the step's resources (bridge/ray_task.py
runs the worker there exactly as locally), or, for a worker that can serve warm, a request to a Ray actor that
hosts its `--serve` process there (bridge/ray_warm.py, bridge/ray_actor.py). The runner process stays the head
of the run: the scheduler, state.db, the lock, commits, events and the trace never leave it, and the
classification of the answer and the atomic commit happen here, on the raw answer the task or actor sends back
(bridge/ray_follow.py).

Data modes (docs/scale-out.md): `shared`, the workdir is on a file system every node mounts and its paths are
used as they are; `ship`, the node gets the input files the args name, writes the outputs into a directory of
its own and sends them back through Ray's object store in bounded chunks, and the head writes them into the
staging directory, checking every output's size and sha256 against the envelope before the commit.

Ray is imported only here, and this module only when `--executor ray` is chosen. The runner connects (`connect`,
before anything runs, so an unreachable cluster is a setup error, exit 4) and disconnects.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import ray_data, ray_task
from .answer import AttemptOutcome
from .executor import AttemptRequest, AttemptThreads, Post
from .manifest import LoadedManifest
from .ray_follow import STREAM_OPTIONS, Follow, Interrupted, Lost, not_placed, wait_placed
from .ray_placement import TaskResources, cluster_has_gpus, task_resources, unplaceable
from .schemas import SchemaStore
from .worker_client import DescribeFailed, WorkerIdentity, write_args_file

#: How often the head asks the cluster which nodes are alive while attempts run: Ray itself may take minutes to
#: fail the task of a node whose raylet was killed (measured: more than 90 s with 2.60).
NODE_CHECK_S = 1.0
#: How long a crash on a lost node waits for the cluster to mark that node dead, so the retry goes elsewhere.
NODE_DEATH_WAIT_S = 60.0
#: How long a HOST:PORT address may take to accept a TCP connection before the cluster counts as unreachable.
PROBE_TIMEOUT_S = 5.0


@dataclass
class RayOptions:
    address: str | None = None  # None: start a Ray instance on this machine; "auto": the one `ray start` made
    data: str = "ship"
    placement_timeout_s: float = 60.0
    connect_timeout_s: float = 60.0
    gpu_gb: float | None = None  # --ray-gpu-gb: one GPU's memory; a step's vram_gb becomes a share of one GPU


class RayUnavailable(Exception):
    """The cluster cannot be reached (or Ray is not installed): a setup error, before anything runs."""


def connect(options: RayOptions) -> bool:
    """Connect this process to the cluster as Ray's driver; True when this call made the connection."""
    if (options.address or "").startswith("ray://"):
        # Ray Client cannot stream ("Streaming actor methods (num_returns="streaming") are not currently supported
        # when using Ray Client", Ray 2.60), and every attempt streams its events and output chunks.
        raise RayUnavailable(
            f"{options.address}: Ray Client (ray://) cannot carry the streams an attempt sends back; run the runner "
            "on a machine of the cluster with --ray-address auto (or the head's HOST:PORT), or submit it as a Ray "
            "job: ray job submit --address http://HEAD:8265 -- python -m bridge run MANIFEST --executor ray "
            "--ray-address auto (docs/scale-out.md)")
    try:
        import ray
    except ImportError:
        raise RayUnavailable('Ray is not installed: pip install "storybridge[ray]"') from None
    if ray.is_initialized():
        return False
    _probe(options.address)
    where = options.address or "a new local instance"
    outcome: dict[str, BaseException | None] = {}
    answered = threading.Event()

    def init() -> None:
        try:
            ray.init(address=options.address, log_to_driver=False)
            outcome["error"] = None
        except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError: all mean "no cluster"
            outcome["error"] = exc
        answered.set()
        # The thread stays: the Ray instance ray.init may start here (no address) dies with the thread that
        # started it (measured: a GCS lost a minute later when this thread had ended).
        threading.Event().wait()

    # ray.init waits minutes for an address where nothing answers; the run gives up after connect_timeout_s
    # (then the runner exits with the setup error, leaving the thread behind).
    threading.Thread(target=init, daemon=True, name="ray-connect").start()
    answered.wait(options.connect_timeout_s)
    if "error" not in outcome:
        raise RayUnavailable(f"cannot reach the Ray cluster at {where}: no answer within "
                             f"--ray-connect-timeout-s {options.connect_timeout_s:g}")
    if outcome["error"] is not None:
        exc = outcome["error"]
        raise RayUnavailable(f"cannot reach the Ray cluster at {where}: {type(exc).__name__}: {exc}")
    return True


def _probe(address: str | None) -> None:
    """Raise RayUnavailable when nothing listens at a HOST:PORT address. Ray's own connect retries such an
    address for minutes (measured with 2.60: more than 5 min for 127.0.0.1:1); a TCP connect says so at once.
    Other forms (none, `auto`, `ray://...`) are left to Ray."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # Ray words the error for a malformed address
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from None


class RayExecutor:
    def __init__(self, post: Post, schemas: SchemaStore, cancel: threading.Event, manifest: LoadedManifest,
                 options: RayOptions, identities: dict[str, WorkerIdentity | DescribeFailed] | None = None, *,
                 warm_idle_s: float = 60.0, max_idle: int = 1):
        import ray

        from .ray_warm import RayWarmPool

        self.ray = ray
        self.post, self.schemas, self.cancel, self.m, self.opts = post, schemas, cancel, manifest, options
        self._remote = ray.remote(ray_task.attempt_on_node)
        self._has_gpus = cluster_has_gpus(ray.nodes())
        self._threads = AttemptThreads(post, warm=False)
        self._warm_threads = AttemptThreads(post, warm=True)
        self._alive_lock = threading.Lock()
        self._alive: tuple[float, set[str]] = (0.0, set())
        self._crashed_on: dict[tuple[str, int], set[str]] = {}  # unit -> nodes where one of its attempts crashed
        self.warm = RayWarmPool(self, {} if identities is None else identities, idle_s=warm_idle_s, max_idle=max_idle)

    def node_alive(self, node_id: str) -> bool:
        """From a view of the cluster at most NODE_CHECK_S old, shared by all attempts."""
        with self._alive_lock:
            checked, alive = self._alive
            if time.monotonic() - checked >= NODE_CHECK_S:
                alive = {n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}
                self._alive = (time.monotonic(), alive)
        return node_id in alive

    def short_of(self, need: TaskResources) -> set[str]:
        """What the cluster has less of free than the attempt asks for, among what idle warm actors hold:
        evicting an idle actor can only help with those."""
        free = self.ray.available_resources()
        return {name for name, amount in need.held_by_actor().items() if free.get(name, 0) < amount}

    def submit(self, request: AttemptRequest) -> None:
        warm = self.warm.identity(request.worker) is not None
        (self._warm_threads if warm else self._threads).start(request, self._attempt)

    def close(self) -> None:
        self._threads.join()
        self._warm_threads.join()
        self.warm.close()

    # one attempt --------------------------------------------------------------------------------------------
    def _attempt(self, request: AttemptRequest) -> AttemptOutcome:
        write_args_file(request.files, request.args)  # the record of what ran, as locally
        step = self.m.steps[request.unit[0]]
        need = task_resources(step.resources, step.fallback, self._has_gpus, gpu_gb=self.opts.gpu_gb)
        avoid = self._avoided(request, need)
        outcome = None
        if self.warm.identity(request.worker) is not None:
            outcome = self.warm.attempt(request, need, avoid)
        if outcome is None:
            outcome = self._one_shot(request, need, avoid)
        if outcome.kind == "crash" and outcome.node:
            self._crashed_on.setdefault(request.unit, set()).add(outcome.node["node_id"])
        return outcome

    def _avoided(self, request: AttemptRequest, need: TaskResources) -> set[str]:
        """The nodes a retry stays off: those where an attempt of the same unit crashed (its worker died there:
        out of memory, a bad GPU, a lost node), as long as another alive node could take it."""
        crashed = self._crashed_on.get(request.unit, set())
        if not crashed:
            return set()
        others = [n for n in self.ray.nodes() if n.get("Alive") and n["NodeID"] not in crashed]
        return set() if unplaceable(need.wanted(), others) is not None else set(crashed)

    def placement_options(self, need: TaskResources, avoid: set[str]) -> dict[str, Any]:
        """Ray options for the resources and, on a retry, the nodes to stay off (Ray's node-id label)."""
        options = need.ray_options()
        if avoid:
            options["label_selector"] = {"ray.io/node-id": "!in(" + ",".join(sorted(avoid)) + ")"}
        return options

    def _one_shot(self, request: AttemptRequest, need: TaskResources, avoid: set[str]) -> AttemptOutcome:
        task = self._remote.options(**self.placement_options(need, avoid), max_retries=0, **STREAM_OPTIONS
                                    ).remote({**self.host_spec(request, need), **self.request_spec(request)})
        follow = Follow(self, request, task, cancel=lambda: self.ray.cancel(task))
        started = time.monotonic()
        try:
            if not wait_placed(self, follow.ready, need, evict=self.warm.evict_one):
                follow.cancel()
                return not_placed(self, need, time.monotonic() - started)
            follow.placed(follow.next()[1])
            return follow.outcome()
        except (Lost, Interrupted) as exc:
            return self.ended(exc, request, follow, started)

    def ended(self, exc: Exception, request: AttemptRequest, follow: Follow | None, started: float) -> AttemptOutcome:
        """The outcome of an attempt whose node was lost (crash, retried elsewhere) or that was interrupted."""
        node = follow.node if follow is not None else getattr(exc, "node", None)
        wall_s = round(time.monotonic() - started, 4)
        if isinstance(exc, Lost):
            if node is not None:
                self._await_node_death(node["node_id"])
            return AttemptOutcome(ok=False, kind="crash", retryable=True, node=node, wall_s=wall_s, message=str(exc))
        if follow is not None:
            follow.wait_ended(request.kill_grace_s + 5.0)
        return AttemptOutcome(ok=False, kind="interrupted", message="stopped: the runner was interrupted",
                              node=node, wall_s=wall_s)

    def _await_node_death(self, node_id: str) -> None:
        """A lost node can still count as alive for a while (its task saw the raylet go first): a retry placed
        then could land on it again. So the crash is reported once the cluster marks the node dead, or after
        NODE_DEATH_WAIT_S when it stays alive (the loss was the task's, not the node's)."""
        deadline = time.monotonic() + NODE_DEATH_WAIT_S
        while self.node_alive(node_id) and time.monotonic() < deadline and not self.cancel.is_set():
            time.sleep(NODE_CHECK_S)

    # what travels -------------------------------------------------------------------------------------------
    def host_spec(self, request: AttemptRequest, need: TaskResources) -> dict[str, Any]:
        """What the node needs to start the worker (a task's process, or a warm actor's)."""
        return {"prefix": request.prefix, "cwd": str(request.cwd), "env": request.env,
                "kill_grace_s": request.kill_grace_s, "ship": self.opts.data == "ship",
                "num_gpus": need.num_gpus, "hide_gpus": need.hide_gpus, "threads": need.threads}

    def request_spec(self, request: AttemptRequest) -> dict[str, Any]:
        """What one attempt sends: its args, and in mode ship the input files they name."""
        inputs = {}
        if self.opts.data == "ship":
            inputs = {text: ray_data.read_input(path)
                      for text, path in ray_data.input_files(request.args, request.cwd).items()}
        return {"args": request.args, "args_file": str(request.files.args_file), "timeout_s": request.timeout_s,
                "stderr_log": str(request.files.stderr_log), "inputs": inputs}
