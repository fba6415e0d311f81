"""Warm workers on Ray: attempts of a warm-capable worker go to actors (bridge/ray_actor.py), each hosting one
`--serve` process on a node with the step's resources, so the model stays loaded across attempts, as the local
warm pool (bridge/warm_pool.py) keeps it on one machine. The runner stays the head: it classifies each answer,
verifies the outputs and commits, exactly as for a one-shot task.

What an actor holds while it lives: the step's GPUs (its model stays in their memory), memory and custom
resources. Not its CPUs (`num_cpus=0`, like a plain Ray actor while it runs): otherwise idle actors of the steps
of a pipeline that take turns (keyframe, check, clip, ...) starve each other of CPUs (measured: the story on a
2-CPU Ray instance took 3m46 with CPUs held, every attempt evicting another worker's actor). --jobs bounds the
attempts running at once, and the worker's threads follow the step's `cpu`. The price: an actor of a step
without GPUs or custom resources is placed by Ray's default policy (this node first), not spread by CPUs.

Actors are keyed like the local pool's processes (worker, argv, environment) plus what they hold (the step's
Ray resources) and the working directory. An attempt takes an idle actor of its key (the one whose last request
had the same model key first); else it creates one, and takes over an actor of its key that turns idle while
the new one waits to be placed. An idle actor holds its resources (its GPU above all), so:
* idle actors beyond `max_idle` (the runner passes --jobs plus one per worker), or idle for `idle_s`, go;
* an attempt (one-shot or warm) that cannot be placed while the cluster lacks what it asks for evicts idle
  actors of other keys, the longest idle first (bridge/ray_follow.wait_placed).
An actor whose process did not answer (crash, timeout, cancel), or whose node is lost, is killed; the retry
gets a fresh one. A worker whose `--serve` does not start runs one task per attempt for the rest of the run.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import ray_actor
from .answer import AttemptOutcome
from .executor import AttemptRequest, all_at_once
from .ray_follow import (
    STREAM_OPTIONS,
    Follow,
    Interrupted,
    Lost,
    error_text,
    lost_on,
    not_placed,
    wait_placed,
    wait_ref,
)
from .ray_placement import TaskResources
from .warm_pool import READY_TIMEOUT_S, model_key, warm_identity
from .worker_client import DescribeFailed, WorkerIdentity

if TYPE_CHECKING:
    from .ray_executor import RayExecutor

#: How long a polite stop (a `shutdown` request to the process) may take before the actor is killed.
STOP_WAIT_S = 10.0


@dataclass
class _Host:
    actor: Any
    key: str
    worker: str
    node: dict[str, Any]
    pid: int
    holds: dict[str, float]  # what it holds while it lives (as Ray names resources)
    model_key: str | None = None
    idle_since: float = field(default_factory=time.monotonic)


class RayWarmPool:
    def __init__(self, executor: RayExecutor, identities: dict[str, WorkerIdentity | DescribeFailed], *,
                 idle_s: float, max_idle: int):
        self.x = executor
        self.identities = identities
        self.idle_s, self.max_idle = idle_s, max(1, max_idle)
        self._cls = executor.ray.remote(ray_actor.WarmHost)
        self._idle: list[_Host] = []
        self._not_warm: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, daemon=True, name="ray-warm-reaper")
        self._reaper.start()

    def identity(self, worker: str) -> WorkerIdentity | None:
        return warm_identity(self.identities, worker, self._not_warm)

    # one attempt --------------------------------------------------------------------------------------------
    def attempt(self, request: AttemptRequest, need: TaskResources, avoid: set[str]) -> AttemptOutcome | None:
        """The attempt on a warm actor, off the nodes in `avoid`; None when the worker's `--serve` did not start
        (run it one-shot)."""
        started = time.monotonic()
        deadline = started + request.timeout_s  # starting a process counts against the step's timeout
        key = _key(request, need)
        mkey = model_key(self.identity(request.worker), request.args)
        host = self._checkout(key, mkey, avoid)
        if host is None:
            try:
                host, failed = self._start(request, need, key, mkey, avoid, deadline)
            except (Lost, Interrupted) as exc:
                return self.x.ended(exc, request, None, started)
            if host is None:
                return failed
        return self._request(host, request, mkey, deadline, started)

    def _request(self, host: _Host, request: AttemptRequest, mkey: str | None, deadline: float,
                 started: float) -> AttemptOutcome:
        spec = {**self.x.request_spec(request), "timeout_s": max(0.0, deadline - time.monotonic()),
                "request_id": f"{request.unit[0]}.{request.unit[1]}.{request.attempt}"}
        stream = host.actor.run.options(**STREAM_OPTIONS).remote(spec)
        follow = Follow(self.x, request, stream, cancel=lambda: host.actor.cancel.remote())
        follow.placed(host.node, warm=True, pid=host.pid)
        try:
            outcome = follow.outcome()
        except (Lost, Interrupted) as exc:
            self._drop(host)
            return self.x.ended(exc, request, follow, started)
        if follow.answered and not self._closed.is_set():
            host.model_key = mkey
            self._checkin(host)
        else:
            self._drop(host)  # it did not answer: its process is gone (a fresh actor takes its place)
        return outcome

    def _start(self, request: AttemptRequest, need: TaskResources, key: str, mkey: str | None, avoid: set[str],
               deadline: float) -> tuple[_Host | None, AttemptOutcome | None]:
        """A new actor, placed and with its process ready; or (an idle actor of this key that turned up while
        it waited, None); or (None, why not); (None, None): `--serve` failed, run the attempt one-shot."""
        spec = self.x.host_spec(request, need)
        options = self.x.placement_options(need, avoid)
        options["num_cpus"] = 0  # no CPU held while it lives (see above)
        actor = self._cls.options(**options, max_concurrency=2, max_restarts=0).remote(spec)
        where = actor.where.remote()
        taken: list[_Host] = []

        def placed_or_taken() -> bool:
            if wait_ref(self.x, where, None, lambda: self._kill(actor), lambda t: t):
                return True
            taken.extend(filter(None, [self._checkout(key, mkey, avoid)]))
            return bool(taken)

        placing = time.monotonic()
        if not wait_placed(self.x, placed_or_taken, need, evict=lambda short: self.evict_one(short, but=key)):
            self._kill(actor)
            return None, not_placed(self.x, need, time.monotonic() - placing)
        if taken:
            self._kill(actor)
            return taken[0], None
        try:
            node = self.x.ray.get(where)
        except self.x.ray.exceptions.RayError as exc:  # it died while being placed (its node lost, say)
            self._kill(actor)
            raise Lost(lost_on(None, f"the actor died while starting: {error_text(exc)}")) from None
        info = self._started(actor, node, min(READY_TIMEOUT_S, max(0.0, deadline - time.monotonic())))
        if "start_error" not in info:
            return _Host(actor, key, request.worker, node, info["pid"], need.held_by_actor()), None
        self._kill(actor)
        return None, self._start_failed(request, info["start_error"])

    def _started(self, actor: Any, node: dict[str, Any], ready_timeout_s: float) -> dict[str, Any]:
        """The actor's answer to `start` ({"pid"} or {"start_error"}); Lost (with the node) or Interrupted."""
        ready = actor.start.remote(ready_timeout_s)
        try:
            while not wait_ref(self.x, ready, node, lambda: self._stop(actor), lambda t: lost_on(node, t)):
                pass
            return self.x.ray.get(ready)
        except Lost as exc:
            raise Lost(str(exc), node) from None
        except self.x.ray.exceptions.RayError as exc:
            self._kill(actor)
            raise Lost(lost_on(node, error_text(exc)), node) from None

    def _start_failed(self, request: AttemptRequest, why: str) -> AttemptOutcome | None:
        if why == "cancelled":
            raise Interrupted
        with self._lock:
            self._not_warm.add(request.worker)
        if why == "timeout":
            return AttemptOutcome(ok=False, kind="timeout", retryable=True, message=(
                f"the warm worker did not say `ready` in time on its Ray actor; {request.worker!r} runs one task "
                "per attempt for the rest of the run"))
        return None

    # idle actors --------------------------------------------------------------------------------------------
    def _checkout(self, key: str, mkey: str | None, avoid: set[str]) -> _Host | None:
        with self._lock:
            same = [h for h in self._idle if h.key == key and h.node["node_id"] not in avoid]
            same.sort(key=lambda h: h.model_key != mkey)  # the one holding the model first
            if not same:
                return None
            self._idle.remove(same[0])
            return same[0]

    def _checkin(self, host: _Host) -> None:
        host.idle_since = time.monotonic()
        with self._lock:
            self._idle.append(host)
            surplus = self._idle[:-self.max_idle] if len(self._idle) > self.max_idle else []
            self._idle = self._idle[len(surplus):]
        for extra in surplus:
            self._drop(extra)

    def evict_one(self, short: set[str], but: str | None = None) -> bool:
        """The cluster lacks `short`: the longest idle actor of another key that holds some goes (True if one did)."""
        with self._lock:
            victims = [h for h in self._idle if h.key != but and any(h.holds.get(name) for name in short)]
            if not victims:
                return False
            self._idle.remove(victims[0])
        self._drop(victims[0])
        return True

    def _reap_idle(self) -> None:
        while not self._closed.wait(min(1.0, self.idle_s / 2 if self.idle_s > 0 else 1.0)):
            now = time.monotonic()
            with self._lock:
                stale = [h for h in self._idle if now - h.idle_since >= self.idle_s]
                self._idle = [h for h in self._idle if h not in stale]
            for host in stale:
                self._drop(host)

    def _drop(self, host: _Host) -> None:
        self._stop(host.actor)

    def _stop(self, actor: Any) -> None:
        """Politely (the process gets `shutdown`, then its tree is stopped), then the actor itself."""
        try:
            self.x.ray.get(actor.stop.remote(), timeout=STOP_WAIT_S)
        except Exception:  # noqa: BLE001 - dead already, or stuck: killed below either way
            pass
        self._kill(actor)

    def _kill(self, actor: Any) -> None:
        try:
            self.x.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        all_at_once(self._drop, idle, "ray-warm-stop")

def _key(request: AttemptRequest, need: TaskResources) -> str:
    """Requests with one key can share an actor: same worker argv, environment, directory and resources."""
    return json.dumps([request.worker, request.prefix, sorted(request.env.items()), str(request.cwd),
                       need.ray_options(), need.hide_gpus, need.threads], sort_keys=True, default=str)
