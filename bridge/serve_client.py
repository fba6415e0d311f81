"""One warm worker process (`--serve`, JSON lines; workers/contract/serve.py), seen from the runner.

An explicit state machine: STARTING (spawned, `ready` not seen yet) -> READY <-> BUSY (one request in flight)
-> DEAD (exited, crashed, killed at a timeout or cancel, or shut down). A DEAD client is never used again; the
pool starts a fresh one. The process is started and stopped like a one-shot worker (bridge/proctree.py: own
session, death signal, tree kill) and its stderr is relayed the same way (JSON events to the request in
flight, other lines to a tail for error messages, everything to the request's stderr.log).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .answer import WORKER_EXIT_CODES, AttemptOutcome, classify, exit_text, single_json, tail_text
from .process import ProcessResult, WorkerEventHandler
from .proctree import ProcessTree, popen_kwargs, stop_worker
from .schemas import SchemaStore
from .serve_stderr import RoutedStderr
from .worker_client import AttemptFiles

_POLL_S = 0.05
_SAMPLE_EVERY_S = 0.25


class RequestNotSent(Exception):
    """The process was gone before the request reached it (it never saw it): the client is DEAD."""


@dataclass
class NoAnswer:
    """A request the warm process did not answer; it was stopped (DEAD). Plain values, so it can travel."""

    why: str  # "cancelled", "timeout", or what happened to the process
    wall_s: float
    exit_code: int | None
    peak_rss_mb: float | None
    stderr_tail: list[str]

    def outcome(self, timeout_s: float) -> AttemptOutcome:
        """What a one-shot attempt that ended this way would have been."""
        base = {"exit_code": self.exit_code, "wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb}
        if self.why == "cancelled":
            return AttemptOutcome(ok=False, kind="interrupted", message="stopped: the runner was interrupted", **base)
        if self.why == "timeout":
            return AttemptOutcome(ok=False, kind="timeout", retryable=True, message=(
                f"timed out after {timeout_s:g} s; the warm worker's process tree was killed (a fresh one "
                "takes its place)"), **base)
        return AttemptOutcome(ok=False, kind="crash", retryable=True, message=(
            f"warm worker died without answering ({self.why})" + tail_text(self.stderr_tail)), **base)


class WarmState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DEAD = "dead"


class ServeClient:
    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], kill_grace_s: float,
                 spawn: Callable[[Callable[[], subprocess.Popen]], subprocess.Popen]):
        self.argv = argv
        self.state = WarmState.STARTING
        self.kill_grace_s = kill_grace_s
        self.idle_since = time.monotonic()
        self.requests_served = 0
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # Spawned by the pool's long-lived thread: the death signal fires when the *thread* that forked ends.
        self.proc = spawn(lambda: subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, cwd=str(cwd), env=env, **popen_kwargs()))
        self.tree = ProcessTree(self.proc.pid)
        self._stderr = RoutedStderr(self.proc.stderr)
        self._tail = self._stderr.tail
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    # readers ------------------------------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF: the process is gone (or closed stdout, which is as bad)

    # lifecycle ----------------------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float, cancel: threading.Event) -> str | None:
        """STARTING -> READY; None, or why it did not get there (the client is then DEAD)."""
        doc, why = self._next_message(time.monotonic() + timeout_s, cancel)
        if doc is not None and doc.get("event") == "ready":
            self.state = WarmState.READY
            return None
        self.kill()
        return why or f"expected a `ready` line, got {str(doc)[:200]}"

    def kill(self) -> None:
        if self.state != WarmState.DEAD or self.proc.poll() is None:
            stop_worker(self.proc, self.tree, self.kill_grace_s)
        self.state = WarmState.DEAD

    def shutdown(self) -> None:
        """Ask politely (a `shutdown` request), then stop the tree whatever happened."""
        if self.state == WarmState.READY:
            try:
                self._send({"op": "shutdown", "id": "shutdown"})
                self.proc.wait(timeout=min(5.0, self.kill_grace_s + 1))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self.kill()

    # one request --------------------------------------------------------------------------------------------
    def request(self, args: dict[str, Any], *, files: AttemptFiles, request_id: str, schemas: SchemaStore,
                worker: str, timeout_s: float, cancel: threading.Event,
                on_event: WorkerEventHandler | None) -> AttemptOutcome:
        """One request, classified here (the local pool); raises RequestNotSent (see `exchange`)."""
        answer = self.exchange(args, stderr_log=files.stderr_log, request_id=request_id, timeout_s=timeout_s,
                               cancel=cancel, on_event=on_event)
        if isinstance(answer, NoAnswer):
            return answer.outcome(timeout_s)
        return classify(answer, schemas, worker, files.staging_dir, timeout_s)

    def exchange(self, args: dict[str, Any], *, stderr_log: Path, request_id: str, timeout_s: float,
                 cancel: threading.Event, on_event: WorkerEventHandler | None) -> ProcessResult | NoAnswer:
        """READY -> BUSY -> READY (answered: the answer as a one-shot worker's process result, for `classify`)
        or DEAD (crashed, timed out, cancelled: why). Nothing is judged here, so the answer can travel to where
        it is judged (on Ray an actor hosts the process and the runner classifies). Raises RequestNotSent when
        the process was already gone (the args file is the caller's: written once per attempt)."""
        assert self.state == WarmState.READY, self.state
        self.state = WarmState.BUSY
        self._stderr.route(stderr_log, on_event)
        started = time.monotonic()
        try:
            try:
                self._send({"op": "run", "id": request_id, "args": args})
            except (OSError, ValueError) as exc:
                self.kill()
                raise RequestNotSent(str(exc)) from None
            doc, why = self._next_message(started + timeout_s, cancel, want_id=request_id)
            if doc is not None:
                self._stderr.drain()  # what it wrote to stderr before answering belongs to this request
        finally:
            self._stderr.route(None, None)
        wall_s = round(time.monotonic() - started, 4)
        if doc is None:
            self.kill()
            return NoAnswer(why=why or "crash", wall_s=wall_s, exit_code=self.proc.returncode,
                            peak_rss_mb=self.tree.peak_rss_mb, stderr_tail=list(self._tail))
        self.state, self.idle_since = WarmState.READY, time.monotonic()
        self.requests_served += 1
        envelope = {k: v for k, v in doc.items() if k not in ("event", "id")}
        stdout = json.dumps(envelope).encode("utf-8")
        return ProcessResult(exit_code=_exit_code(envelope), stdout=stdout, stdout_bytes=len(stdout),
                             stderr_tail=list(self._tail), wall_s=wall_s, peak_rss_mb=self.tree.peak_rss_mb)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8"))
        self.proc.stdin.flush()

    def _next_message(self, deadline: float, cancel: threading.Event,
                      want_id: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """The next stdout message (the answer to `want_id`, when given), or (None, why)."""
        next_sample = 0.0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                self.tree.sample()
                next_sample = now + _SAMPLE_EVERY_S
            if cancel.is_set():
                return None, "cancelled"
            if now >= deadline:
                return None, "timeout"
            try:
                line = self._lines.get(timeout=min(_POLL_S, deadline - now))
            except queue.Empty:
                continue
            if line is None:
                try:
                    self.proc.wait(timeout=2.0)  # stdout closes a moment before the exit status is there
                except subprocess.TimeoutExpired:
                    return None, "it closed stdout"
                return None, exit_text(self.proc.returncode)
            doc, problem = single_json(line)
            if problem or not isinstance(doc, dict):
                self._tail.append(f"(stdout) {line[:300]!r}")  # noise on stdout: not an answer, keep waiting
                continue
            if want_id is None or (doc.get("event") == "result" and doc.get("id") == want_id):
                return doc, None


def _exit_code(envelope: dict[str, Any]) -> int | None:
    """The exit code a one-shot worker would have used for this answer."""
    if envelope.get("success"):
        return 0
    error = envelope.get("error")
    return WORKER_EXIT_CODES.get(error.get("kind")) if isinstance(error, dict) else None
