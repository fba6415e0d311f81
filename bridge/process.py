"""Run one worker process: list argv (never a shell), stdout and stderr drained by threads as bytes arrive,
timeout and cancellation that stop the whole process tree, peak RSS sampled with psutil.

The answer is what arrived on stdout by the time the worker exited, plus a short grace period: a descendant
that keeps the pipe open (a daemon) cannot hold the answer back, and is stopped with whatever else the worker
left running.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import safefs
from .proctree import ProcessTree, kill_group, pipe_holders, popen_kwargs, stop_processes, stop_worker

#: stdout beyond this is not kept (an answer is one small JSON document; results spill to files).
MAX_STDOUT_BYTES = 64 * 1024 * 1024
#: After the worker exits, how long its pipes may stay open before whatever holds them is stopped.
ANSWER_GRACE_S = 1.0
STDERR_TAIL_LINES = 40
STDERR_LINE_BYTES = 1 << 20  # a "line" without a newline is cut here, so stderr cannot exhaust memory
_POLL_S = 0.05
_SAMPLE_EVERY_S = 0.25

WorkerEventHandler = Callable[[dict[str, Any]], None]


@dataclass
class ProcessResult:
    exit_code: int | None
    stdout: bytes  # at most MAX_STDOUT_BYTES
    stderr_tail: list[str]
    wall_s: float
    peak_rss_mb: float | None
    timed_out: bool = False
    cancelled: bool = False
    stdout_bytes: int = 0  # everything the worker wrote, kept or not

    @property
    def stdout_over_cap(self) -> bool:
        return self.stdout_bytes > MAX_STDOUT_BYTES


class _StdoutReader(threading.Thread):
    """Keeps bytes as they arrive: read1 returns what is available, where read(n) would wait for n bytes or
    EOF (and EOF never comes while a daemon holds the pipe)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.fd = _fileno(stream)
        self._stream = stream
        self._chunks: list[bytes] = []
        self._kept = 0
        self.total = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        while chunk := _read1(self._stream):
            with self._lock:
                self.total += len(chunk)
                if self._kept + len(chunk) <= MAX_STDOUT_BYTES:  # beyond: counted, not kept
                    self._chunks.append(chunk)
                    self._kept += len(chunk)

    def received(self) -> tuple[bytes, int]:
        with self._lock:
            return b"".join(self._chunks), self.total


class StderrReader(threading.Thread):
    """Lines to stderr.log; JSON events to `on_event`; the rest (library noise) to a short tail."""

    def __init__(self, stream, log_path: Path | None, on_event: WorkerEventHandler | None):
        super().__init__(daemon=True)
        self.fd = _fileno(stream)
        self._stream = stream
        self._log_path = log_path
        self._on_event = on_event
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def run(self) -> None:
        log = None
        if self._log_path:
            try:
                log = safefs.open_append_binary(self._log_path)
            except (OSError, safefs.UnsafePath):
                pass  # no log file, but the pipe must still be drained, or the worker blocks on a full pipe
        try:
            while raw := self._stream.readline(STDERR_LINE_BYTES):
                if log:
                    log.write(raw)
                self._handle(raw.decode("utf-8", "replace").rstrip("\r\n"))
        finally:
            if log:
                log.close()

    def _handle(self, line: str) -> None:
        event = _worker_event(line)
        if event is None:
            if line.strip():
                self.tail.append(line[:2000])
        elif self._on_event:
            try:
                self._on_event(event)
            except Exception:  # noqa: BLE001 - a listener must not kill the reader
                pass


def _read1(stream) -> bytes:
    try:
        return stream.read1(65536)
    except (OSError, ValueError):  # ValueError: closed
        return b""


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream (faked processes in tests)
        return None


def run_process(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout_s: float | None = None, kill_grace_s: float = 5.0,
                cancel: threading.Event | None = None, on_event: WorkerEventHandler | None = None,
                stderr_log: Path | None = None, on_start: Callable[[int], None] | None = None) -> ProcessResult:
    """Start `argv`, drain both pipes concurrently, stop the tree on timeout or cancel, collect the answer."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=str(cwd) if cwd else None, env=env, **popen_kwargs())
    tree = ProcessTree(proc.pid)
    try:
        if on_start is not None:
            on_start(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = _StdoutReader(proc.stdout), StderrReader(proc.stderr, stderr_log, on_event)
        stdout.start()
        stderr.start()
        timed_out, cancelled = _supervise(proc, tree, started, timeout_s, cancel, kill_grace_s)
        _collect(proc, tree, [stdout, stderr], kill_grace_s)
    except BaseException:
        if proc.poll() is None:  # the runner itself failed (or was interrupted): the worker must not outlive it
            stop_worker(proc, tree, 0.0)
        raise
    data, total = stdout.received()
    return ProcessResult(exit_code=proc.returncode, stdout=data, stdout_bytes=total, stderr_tail=list(stderr.tail),
                         wall_s=round(time.monotonic() - started, 4), peak_rss_mb=tree.peak_rss_mb,
                         timed_out=timed_out, cancelled=cancelled)


def _supervise(proc: subprocess.Popen, tree: ProcessTree, started: float, timeout_s: float | None,
               cancel: threading.Event | None, kill_grace_s: float) -> tuple[bool, bool]:
    """Wait for the worker; sample its tree; stop it at the deadline or on cancel. (timed_out, cancelled)"""
    next_sample = 0.0
    deadline = started + timeout_s if timeout_s else None
    while True:
        try:
            proc.wait(timeout=_POLL_S)
            return False, False
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= next_sample:
            tree.sample()
            next_sample = now + _SAMPLE_EVERY_S
        cancelled = cancel is not None and cancel.is_set()
        timed_out = not cancelled and deadline is not None and now >= deadline
        if cancelled or timed_out:
            stop_worker(proc, tree, kill_grace_s)
            return timed_out, cancelled


def _collect(proc: subprocess.Popen, tree: ProcessTree, readers: list[_StdoutReader | StderrReader],
             grace_s: float) -> None:
    """The worker has exited: wait briefly for its pipes to close, then stop whatever it left running."""
    deadline = time.monotonic() + ANSWER_GRACE_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    open_pipes = [r.fd for r in readers if r.is_alive() and r.fd is not None]
    leftovers = {p.pid: p for p in tree.live_descendants()}
    leftovers.update((p.pid, p) for p in pipe_holders(open_pipes))
    if leftovers:
        stop_processes(list(leftovers.values()), grace_s)
    if any(r.is_alive() for r in readers):
        kill_group(proc.pid)  # stragglers still in the worker's group
        for reader in readers:
            reader.join(2.0)
    if not any(r.is_alive() for r in readers):  # a reader still blocked keeps its fd: never close under it
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _worker_event(line: str) -> dict[str, Any] | None:
    """A worker's stderr JSON line (`{"event": "progress"|"log", ...}`), or None for library noise."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("event"), str):
        return data
    return None
