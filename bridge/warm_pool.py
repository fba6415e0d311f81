"""The local warm pool: an executor that sends attempts of warm-capable workers to `--serve` processes.

A worker is warm-capable when its `--describe` answer says `warm: true` (contract 1.2); any other worker (a
foreign one-shot worker) goes to the one-process-per-attempt executor, and so does a warm-capable worker whose
`--serve` process once failed to start (for the rest of the run). Processes are keyed by (worker, environment):
the environment (CUDA_VISIBLE_DEVICES above all) is fixed when a process starts. Among idle processes of that
key, the one the grant took over (`Grant.warm_token`) comes first, then the one whose last request had the
same model key (the args fields `model_key_fields` names), since it holds that model. The coordinator never
runs more attempts than the slots allow, so at most that many processes are busy; idle ones beyond `max_idle`
(the runner passes the slot count plus one per worker), and any idle for `idle_s`, are shut down.

An idle process keeps its model in VRAM: its grant's GPU load stays parked in the slot pool
(resources.SlotPool.park) until it is busy again or gone; a request that needs that room has it evicted.

A warm process that crashes, hangs past the step's timeout or is cancelled is killed (DEAD) and dropped; the
coordinator retries the attempt per the step's policy, and the retry gets a fresh process. One that died while
idle is dropped at checkout; one found dead when the request is sent (it never saw it) is replaced by a fresh
process within the same attempt.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .answer import AttemptOutcome
from .executor import AttemptRequest, AttemptThreads, LocalExecutor, Post, Started, WorkerEvent, all_at_once
from .resources import SlotPool
from .schemas import SchemaStore
from .serve_client import RequestNotSent, ServeClient, WarmState
from .worker_client import DescribeFailed, WorkerIdentity, write_args_file

#: How long a warm process may take to say `ready` (it imports its libraries, loads no model yet).
READY_TIMEOUT_S = 120.0


_tokens = itertools.count(1)


@dataclass
class _Slot:
    client: ServeClient
    worker: str
    env_key: frozenset[tuple[str, str]]
    model_key: str | None = None
    token: int = field(default_factory=lambda: next(_tokens))  # its parked load in the slot pool


def _env_key(env: dict[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(env.items())


class WarmPoolExecutor:
    def __init__(self, post: Post, schemas: SchemaStore, cancel: threading.Event,
                 identities: dict[str, WorkerIdentity | DescribeFailed], *, idle_s: float, max_idle: int,
                 slots: SlotPool | None = None):
        self.post = post
        self.schemas = schemas
        self.cancel = cancel
        self.identities = identities
        self.idle_s = idle_s
        self.max_idle = max(1, max_idle)
        self.one_shot = LocalExecutor(post, schemas, cancel)
        self._idle: list[_Slot] = []
        self._not_warm: set[str] = set()  # workers whose `--serve` failed to start: one-shot from then on
        self._lock = threading.Lock()
        self.slots = slots
        if slots is not None:
            slots.evict = self._evict
        self._threads = AttemptThreads(post, warm=True)
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-spawn")
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, daemon=True, name="warm-reaper")
        self._reaper.start()

    def _warm(self, worker: str) -> WorkerIdentity | None:
        return warm_identity(self.identities, worker, self._not_warm)

    def submit(self, request: AttemptRequest) -> None:
        if self._warm(request.worker) is None:
            self.one_shot.submit(request)
        else:
            self._threads.start(request, self._attempt)

    def _attempt(self, request: AttemptRequest) -> AttemptOutcome:
        deadline = time.monotonic() + request.timeout_s  # starting a process counts against the step's timeout
        key = model_key(self._warm(request.worker), request.args)
        write_args_file(request.files, request.args)
        while True:
            slot, reused, failed = self._checkout(request, key, deadline)
            if slot is None:
                return failed or self._one_shot(request, deadline)
            self.post(Started(request, slot.client.pid, warm=True))
            try:
                outcome = slot.client.request(
                    request.args, files=request.files, schemas=self.schemas, worker=request.worker,
                    request_id=f"{request.unit[0]}.{request.unit[1]}.{request.attempt}",
                    timeout_s=max(0.0, deadline - time.monotonic()), cancel=self.cancel,
                    on_event=lambda ev: self.post(WorkerEvent(request, ev)))
            except RequestNotSent as exc:
                if reused:
                    continue  # it died while idle; the request never reached it: a fresh process, same attempt
                return AttemptOutcome(ok=False, kind="crash", retryable=True,
                                      message=f"warm worker died before the request reached it: {exc}")
            slot.model_key = key
            self._checkin(slot, request)
            return outcome

    def _checkout(self, request: AttemptRequest, key: str | None,
                  deadline: float) -> tuple[_Slot | None, bool, AttemptOutcome | None]:
        """(an idle or fresh process, whether it was idle, None) or (None, False, why it did not start);
        (None, False, None): its `--serve` failed, the attempt is to run one-shot."""
        env_key = _env_key(request.env)
        claimed = request.grant.warm_token if request.grant is not None else None
        with self._lock:
            dead = [s for s in self._idle if s.client.proc.poll() is not None]
            same = [s for s in self._idle if s not in dead and s.worker == request.worker and s.env_key == env_key]
            same.sort(key=lambda s: (s.token != claimed, s.model_key != key))  # taken over, then same model
            chosen = same[0] if same else None
            self._idle = [s for s in self._idle if s not in dead and s is not chosen]
        for slot in dead:  # died while idle: never handed out
            self._drop(slot)
        if chosen is not None:
            self._unpark(chosen)  # busy again: the attempt's grant counts it now
            return chosen, True, None
        client = ServeClient([*request.prefix, "--serve"], cwd=request.cwd, env=request.env,
                             kill_grace_s=request.kill_grace_s, spawn=lambda f: self._spawner.submit(f).result())
        wait_s = min(READY_TIMEOUT_S, max(0.0, deadline - time.monotonic()))
        why = client.wait_ready(wait_s, self.cancel)
        if why is None:
            return _Slot(client, request.worker, env_key), False, None
        return None, False, self._start_failed(request, why, wait_s)

    def _start_failed(self, request: AttemptRequest, why: str, waited_s: float) -> AttemptOutcome | None:
        """A `--serve` process that did not get ready: the worker runs one-shot for the rest of the run."""
        if why == "cancelled":
            return AttemptOutcome(ok=False, kind="interrupted", message="stopped: the runner was interrupted")
        with self._lock:
            self._not_warm.add(request.worker)
        if why == "timeout":
            return AttemptOutcome(ok=False, kind="timeout", retryable=True, message=(
                f"the warm worker did not say `ready` within {waited_s:.1f} s; it was killed and "
                f"{request.worker!r} runs one process per attempt for the rest of the run"))
        return None  # it crashed at start (no `--serve`?): this very attempt runs one-shot

    def _one_shot(self, request: AttemptRequest, deadline: float) -> AttemptOutcome:
        self.post(WorkerEvent(request, {"event": "log", "level": "warning", "message": (
            f"{request.worker}: its --serve process did not start; running it one process per attempt")}))
        return self.one_shot.run_written(request, timeout_s=max(0.0, deadline - time.monotonic()))

    def _checkin(self, slot: _Slot, request: AttemptRequest) -> None:
        if slot.client.state != WarmState.READY or self._closed.is_set():
            slot.client.kill()
            return
        with self._lock:  # parked and listed at once: an eviction sees both or neither
            if self.slots is not None and request.grant is not None:
                self.slots.park(slot.token, slot.worker, request.grant)  # idle, its model still in VRAM
            self._idle.append(slot)
            surplus = self._idle[:-self.max_idle] if len(self._idle) > self.max_idle else []
            self._idle = self._idle[len(surplus):]
        for extra in surplus:  # more idle processes than slots: the longest idle go
            self._drop(extra)

    def _unpark(self, slot: _Slot) -> None:
        if self.slots is not None:
            self.slots.unpark(slot.token)

    def _drop(self, slot: _Slot) -> None:
        """An idle process goes: its parked load first, then the process."""
        self._unpark(slot)
        slot.client.shutdown()

    def _evict(self, tokens: list[int]) -> None:
        """The slot pool needs the room these idle processes hold (their loads are unparked already)."""
        with self._lock:
            victims = [s for s in self._idle if s.token in tokens]
            self._idle = [s for s in self._idle if s not in victims]
        for slot in victims:
            slot.client.shutdown()  # gone (tree stopped) before the grant that needs the room is used

    def _reap_idle(self) -> None:
        while not self._closed.wait(min(1.0, self.idle_s / 2 if self.idle_s > 0 else 1.0)):
            now = time.monotonic()
            with self._lock:
                stale = [s for s in self._idle if now - s.client.idle_since >= self.idle_s]
                self._idle = [s for s in self._idle if s not in stale]
            for slot in stale:
                self._drop(slot)

    def close(self) -> None:
        self._threads.join()
        self.one_shot.close()
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        all_at_once(self._drop, idle, "warm-stop")
        self._spawner.shutdown(wait=True)


def warm_identity(identities: dict[str, WorkerIdentity | DescribeFailed], worker: str,
                  not_warm: set[str]) -> WorkerIdentity | None:
    """The worker's identity when it serves warm (it says `warm: true`, and its `--serve` has not failed to
    start in this run); else None: it runs one process per attempt."""
    found = identities.get(worker)
    usable = isinstance(found, WorkerIdentity) and found.warm and worker not in not_warm
    return found if usable else None


def model_key(identity: WorkerIdentity | None, args: dict) -> str | None:
    """What identifies the model a request needs, from the fields the worker advertises (None: unknown)."""
    fields = identity.model_key_fields if identity is not None else None
    if not fields:
        return None
    return json.dumps({f: args.get(f) for f in fields}, sort_keys=True, default=str)
