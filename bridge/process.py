"""Run one worker process: list argv (never a shell), stdout and stderr drained by threads, timeout and
cancellation that stop the whole process tree (TERM, grace period, KILL), peak RSS sampled with psutil."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

#: stdout beyond this is dropped (an answer is one small JSON document; results spill to files).
MAX_STDOUT_BYTES = 64 * 1024 * 1024
STDERR_TAIL_LINES = 40
_POLL_S = 0.05
_RSS_EVERY_S = 0.25

WorkerEventHandler = Callable[[dict[str, Any]], None]


@dataclass
class ProcessResult:
    exit_code: int | None
    stdout: bytes
    stderr_tail: list[str]
    wall_s: float
    peak_rss_mb: float | None
    timed_out: bool = False
    cancelled: bool = False


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Linux: the worker gets SIGKILL if the runner dies (even by SIGKILL), so no orphan keeps running."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec


_PREEXEC = _pdeathsig_preexec()


def popen_kwargs() -> dict[str, Any]:
    """Platform options: the worker gets its own session / process group, so the runner owns its shutdown."""
    if os.name == "nt":  # pragma: no cover
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    kwargs: dict[str, Any] = {"start_new_session": True}
    if _PREEXEC is not None:
        kwargs["preexec_fn"] = _PREEXEC
    return kwargs


def kill_tree(proc: subprocess.Popen, grace_s: float) -> list[int]:
    """TERM the worker and all its descendants, wait `grace_s`, KILL what is left. Returns the pids stopped."""
    if not proc.pid or proc.pid <= 0:  # pid 0 would name the whole system to psutil
        _quiet(proc.kill)
        return []
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        descendants = []
    for p in descendants:
        _quiet(p.terminate)
    _quiet(proc.terminate)
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _quiet(proc.kill)
    _, alive = psutil.wait_procs(descendants, timeout=max(0.0, deadline - time.monotonic()))
    for p in alive:
        _quiet(p.kill)
    psutil.wait_procs(alive, timeout=2)
    _kill_group(proc.pid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass
    return [proc.pid] + [p.pid for p in descendants]


def _kill_group(pgid: int) -> None:
    """POSIX: stragglers that left the tree (daemonised children) still share the worker's process group."""
    if os.name == "nt" or pgid <= 1 or pgid == os.getpgrp():  # never our own group (or a fake pid 0)
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _quiet(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, OSError):
        pass


def _tree_rss_mb(pid: int) -> float | None:
    if not pid or pid <= 0:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return round(total / (1024 * 1024), 1)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OSError):
        return None


def run_process(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout_s: float | None = None, kill_grace_s: float = 5.0,
                cancel: threading.Event | None = None, on_event: WorkerEventHandler | None = None,
                stderr_log: Path | None = None) -> ProcessResult:
    """Start `argv`, drain both pipes concurrently, and stop the tree on timeout or cancel."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=str(cwd) if cwd else None, env=env, **popen_kwargs())
    chunks: list[bytes] = []
    kept_bytes = [0]
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def read_stdout() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read(65536), b""):
            if kept_bytes[0] + len(chunk) <= MAX_STDOUT_BYTES:  # beyond: dropped, so the answer fails to parse
                chunks.append(chunk)
                kept_bytes[0] += len(chunk)

    def read_stderr() -> None:
        assert proc.stderr is not None
        log = open(stderr_log, "ab") if stderr_log else None  # noqa: SIM115 - closed below
        try:
            for raw in iter(proc.stderr.readline, b""):
                if log:
                    log.write(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                event = _worker_event(line)
                if event is not None:
                    if on_event:
                        try:
                            on_event(event)
                        except Exception:  # noqa: BLE001 - a listener must not kill the reader
                            pass
                elif line.strip():
                    tail.append(line[:2000])
        finally:
            if log:
                log.close()

    readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in readers:
        t.start()

    timed_out = cancelled = False
    peak: float | None = None
    next_rss = 0.0
    deadline = started + timeout_s if timeout_s else None
    while True:
        try:
            proc.wait(timeout=_POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= next_rss:
            rss = _tree_rss_mb(proc.pid)
            if rss is not None:
                peak = rss if peak is None else max(peak, rss)
            next_rss = now + _RSS_EVERY_S
        if cancel is not None and cancel.is_set():
            cancelled = True
        elif deadline is not None and now >= deadline:
            timed_out = True
        if cancelled or timed_out:
            kill_tree(proc, kill_grace_s)
            break
    for t in readers:
        t.join(timeout=2.0)
    if any(t.is_alive() for t in readers):
        # The worker exited but something it started still holds the pipes: stop the stragglers.
        _kill_group(proc.pid)
        for t in readers:
            t.join(timeout=2.0)
    return ProcessResult(exit_code=proc.returncode, stdout=b"".join(chunks), stderr_tail=list(tail),
                         wall_s=round(time.monotonic() - started, 4), peak_rss_mb=peak, timed_out=timed_out,
                         cancelled=cancelled)


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
