"""Running one attempt somewhere, behind a small interface, so that "what runs" (scheduler, coordinator) stays
apart from "where it runs" (a local subprocess, a local warm worker; later, another machine).

An executor gets an `AttemptRequest` and reports back through `post` only, with plain values: `Started` (the
worker's pid, so a later runner can stop it), `WorkerEvent` (a progress or log line) and, exactly once,
`Finished` with the attempt's `AttemptOutcome`. It never touches run state, results, events or the trace:
the coordinator alone applies what it posts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .answer import AttemptOutcome
from .resources import Grant
from .schemas import SchemaStore
from .worker_client import AttemptFiles, run_written_attempt, write_args_file


@dataclass
class AttemptRequest:
    unit: tuple[str, int]  # (step id, item; -1 for a whole step)
    attempt: int
    worker: str
    prefix: list[str]  # the worker's argv prefix
    args: dict[str, Any]  # output_dir included
    files: AttemptFiles
    cwd: Path
    env: dict[str, str]
    timeout_s: float
    kill_grace_s: float
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    model_key: str | None = None  # set when the worker can serve warm: requests with one key share a process
    grant: Grant | None = None  # what the attempt holds (the warm pool parks its GPU load while idle)


@dataclass
class Started:
    request: AttemptRequest
    pid: int
    warm: bool = False


@dataclass
class WorkerEvent:
    request: AttemptRequest
    event: dict[str, Any]


@dataclass
class Finished:
    request: AttemptRequest
    outcome: AttemptOutcome
    warm: bool = False


Message = Started | WorkerEvent | Finished
Post = Callable[[Message], None]


class AttemptExecutor(Protocol):
    def submit(self, request: AttemptRequest) -> None:
        """Start the attempt; return at once. Exactly one `Finished` follows, through `post`."""

    def close(self) -> None:
        """Stop what is still running (the run is over or interrupted) and wait for it."""


class AttemptThreads:
    """One thread per attempt (the slots bound how many); each posts exactly one `Finished`."""

    def __init__(self, post: Post, *, warm: bool):
        self.post = post
        self.warm = warm
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, request: AttemptRequest, attempt: Callable[[AttemptRequest], AttemptOutcome]) -> None:
        thread = threading.Thread(target=self._run, args=(request, attempt), daemon=True,
                                  name=f"attempt-{request.unit[0]}-{request.unit[1]}-{request.attempt}")
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, request: AttemptRequest, attempt: Callable[[AttemptRequest], AttemptOutcome]) -> None:
        try:
            outcome = attempt(request)
        except Exception as exc:  # noqa: BLE001 - a bug here must still end the attempt, or the run waits forever
            outcome = AttemptOutcome(ok=False, kind="runner_error", message=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
        self.post(Finished(request, outcome, warm=self.warm))

    def join(self) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()


def all_at_once(work: Callable[[Any], None], items: list[Any], name: str) -> None:
    """`work` on every item, each on a thread of its own, and wait for all: stopping idle warm processes, each
    of which (torch loaded) takes a second or more to exit, at the end of a run that leaves several."""
    threads = [threading.Thread(target=work, args=(item,), name=name) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class LocalExecutor:
    """One worker process per attempt."""

    def __init__(self, post: Post, schemas: SchemaStore, cancel: threading.Event):
        self.post = post
        self.schemas = schemas
        self.cancel = cancel
        self._threads = AttemptThreads(post, warm=False)

    def submit(self, request: AttemptRequest) -> None:
        self._threads.start(request, self._attempt)

    def _attempt(self, request: AttemptRequest) -> AttemptOutcome:
        write_args_file(request.files, request.args)
        return self.run_written(request, timeout_s=request.timeout_s)

    def run_written(self, request: AttemptRequest, *, timeout_s: float) -> AttemptOutcome:
        """One process for an attempt whose args file is written (also the warm pool's fallback)."""
        return run_written_attempt(request.prefix, files=request.files, cwd=request.cwd, env=request.env,
                                   schemas=self.schemas, worker=request.worker, timeout_s=timeout_s,
                                   kill_grace_s=request.kill_grace_s, cancel=self.cancel,
                                   on_event=lambda ev: self.post(WorkerEvent(request, ev)),
                                   on_start=lambda pid: self.post(Started(request, pid)))

    def close(self) -> None:
        self._threads.join()
