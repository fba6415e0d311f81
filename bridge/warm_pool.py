"""The local warm pool: an executor that sends attempts of warm-capable workers to `--serve` processes.

A worker is warm-capable when its `--describe` answer says `warm: true` (contract 1.2); any other worker (a
foreign one-shot worker) goes to the one-process-per-attempt executor. Processes are keyed by
(worker, devices): CUDA_VISIBLE_DEVICES is fixed when a process starts. Among idle processes of that key, the
one whose last request had the same model key (the args fields `model_key_fields` names) is preferred, since
it holds that model. The coordinator never runs more attempts than the slots allow, so at most that many
processes are busy; idle ones beyond the slot count, and any idle for `idle_s`, are shut down.

A warm process that crashes, hangs past the step's timeout or is cancelled is killed (DEAD) and dropped; the
coordinator retries the attempt per the step's policy, and the retry gets a fresh process.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .answer import AttemptOutcome
from .executor import AttemptRequest, AttemptThreads, LocalExecutor, Post, Started, WorkerEvent
from .schemas import SchemaStore
from .serve_client import ServeClient, WarmState
from .worker_client import DescribeFailed, WorkerIdentity

#: How long a warm process may take to say `ready` (it imports its libraries, loads no model yet).
READY_TIMEOUT_S = 120.0


@dataclass
class _Slot:
    client: ServeClient
    worker: str
    devices: tuple[str, ...]
    model_key: str | None = None


class WarmPoolExecutor:
    def __init__(self, post: Post, schemas: SchemaStore, cancel: threading.Event,
                 identities: dict[str, WorkerIdentity | DescribeFailed], *, idle_s: float, max_idle: int):
        self.post = post
        self.schemas = schemas
        self.cancel = cancel
        self.identities = identities
        self.idle_s = idle_s
        self.max_idle = max(1, max_idle)
        self.one_shot = LocalExecutor(post, schemas, cancel)
        self._idle: list[_Slot] = []
        self._lock = threading.Lock()
        self._threads = AttemptThreads(post, warm=True)
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-spawn")
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, daemon=True, name="warm-reaper")
        self._reaper.start()

    def _warm(self, worker: str) -> WorkerIdentity | None:
        found = self.identities.get(worker)
        return found if isinstance(found, WorkerIdentity) and found.warm else None

    def submit(self, request: AttemptRequest) -> None:
        if self._warm(request.worker) is None:
            self.one_shot.submit(request)
        else:
            self._threads.start(request, self._attempt)

    def _attempt(self, request: AttemptRequest) -> AttemptOutcome:
        key = model_key(self._warm(request.worker), request.args)
        slot, why = self._checkout(request, key)
        if slot is None:
            return AttemptOutcome(ok=False, kind="crash", retryable=True,
                                  message=f"warm worker did not start: {why}")
        self.post(Started(request, slot.client.pid, warm=True))
        outcome = slot.client.request(
            request.args, files=request.files, request_id=f"{request.unit[0]}.{request.unit[1]}.{request.attempt}",
            schemas=self.schemas, worker=request.worker, timeout_s=request.timeout_s, cancel=self.cancel,
            on_event=lambda ev: self.post(WorkerEvent(request, ev)))
        slot.model_key = key
        self._checkin(slot)
        return outcome

    def _checkout(self, request: AttemptRequest, key: str | None) -> tuple[_Slot | None, str | None]:
        devices = tuple(request.devices)
        with self._lock:
            same = [s for s in self._idle if s.worker == request.worker and s.devices == devices]
            same.sort(key=lambda s: s.model_key != key)  # the one holding this model first
            if same:
                self._idle.remove(same[0])
                return same[0], None
        client = ServeClient([*request.prefix, "--serve"], cwd=request.cwd, env=request.env,
                             kill_grace_s=request.kill_grace_s, spawn=lambda f: self._spawner.submit(f).result())
        why = client.wait_ready(READY_TIMEOUT_S, self.cancel)
        return (None, why) if why else (_Slot(client, request.worker, devices), None)

    def _checkin(self, slot: _Slot) -> None:
        if slot.client.state != WarmState.READY or self._closed.is_set():
            slot.client.kill()
            return
        with self._lock:
            self._idle.append(slot)
            surplus = self._idle[:-self.max_idle] if len(self._idle) > self.max_idle else []
            self._idle = self._idle[len(surplus):]
        for extra in surplus:  # more idle processes than slots: the longest idle go
            extra.client.shutdown()

    def _reap_idle(self) -> None:
        while not self._closed.wait(min(1.0, self.idle_s / 2 if self.idle_s > 0 else 1.0)):
            now = time.monotonic()
            with self._lock:
                stale = [s for s in self._idle if now - s.client.idle_since >= self.idle_s]
                self._idle = [s for s in self._idle if s not in stale]
            for slot in stale:
                slot.client.shutdown()

    def close(self) -> None:
        self._threads.join()
        self.one_shot.close()
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for slot in idle:
            slot.client.shutdown()
        self._spawner.shutdown(wait=True)


def model_key(identity: WorkerIdentity | None, args: dict) -> str | None:
    """What identifies the model a request needs, from the fields the worker advertises (None: unknown)."""
    fields = identity.model_key_fields if identity is not None else None
    if not fields:
        return None
    return json.dumps({f: args.get(f) for f in fields}, sort_keys=True, default=str)
