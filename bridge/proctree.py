"""A worker's process tree: how it is started (own session, death signal), what it spawned, and stopping all
of it, including descendants that started their own session (a daemon is no longer in the worker's process
group, and once the worker exits it is no longer below the worker either)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

#: Test hook: seconds a spawned child sleeps between fork and PR_SET_PDEATHSIG, to make the race with a dying
#: runner deterministic (tests/test_bridge_process.py). Unset in normal use.
SPAWN_PAUSE_ENV = "STORYBRIDGE_TEST_SPAWN_PAUSE_S"
_PR_SET_PDEATHSIG = 1
#: Exit status of a child that found its runner gone before it could exec the worker.
ORPHAN_EXIT = 125


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork: the child only calls it
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int, pause_s: float) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when the runner dies (even by SIGKILL).

    The death signal only covers a parent that dies *after* prctl, so the child then checks that its parent
    is still the runner; if the runner died between fork and prctl, nothing would ever kill the worker.
    """
    prctl = _PRCTL

    def preexec() -> None:
        if pause_s:
            time.sleep(pause_s)
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(ORPHAN_EXIT)

    return preexec


def popen_kwargs() -> dict[str, Any]:
    """Platform options: the worker gets its own session / process group, so the runner owns its shutdown."""
    if os.name == "nt":  # pragma: no cover
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    kwargs: dict[str, Any] = {"start_new_session": True}
    if _PRCTL is not None:
        pause_s = float(os.environ.get(SPAWN_PAUSE_ENV) or 0)
        kwargs["preexec_fn"] = _die_with_parent(os.getpid(), pause_s)
    return kwargs


class ProcessTree:
    """The worker and every descendant seen while it ran; sampled with psutil, which also gives peak RSS."""

    def __init__(self, pid: int):
        self.pid = pid
        self.seen: dict[int, psutil.Process] = {}
        self.peak_rss_mb: float | None = None

    def sample(self) -> None:
        if not self.pid or self.pid <= 0:  # pid 0 would name the whole system to psutil
            return
        try:
            root = psutil.Process(self.pid)
            descendants = root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OSError):
            return
        total = 0
        for p in [root, *descendants]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        for p in descendants:
            self.seen.setdefault(p.pid, p)
        rss = round(total / (1024 * 1024), 1)
        self.peak_rss_mb = rss if self.peak_rss_mb is None else max(self.peak_rss_mb, rss)

    def live_descendants(self) -> list[psutil.Process]:
        # is_running() compares the start time too, so a recycled pid is never mistaken for a descendant.
        return [p for p in self.seen.values() if _running(p)]


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stop_processes(procs: list[psutil.Process], grace_s: float) -> list[int]:
    """TERM, wait up to `grace_s`, KILL what is left. Returns the pids that were running."""
    procs = [p for p in procs if _running(p)]
    for p in procs:
        _quiet(p.terminate)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        _quiet(p.kill)
    psutil.wait_procs(alive, timeout=2)
    return [p.pid for p in procs]


def stop_worker(proc: subprocess.Popen, tree: ProcessTree, grace_s: float) -> None:
    """Timeout or cancel: TERM the worker and its descendants, wait `grace_s`, KILL what is left."""
    if not proc.pid or proc.pid <= 0:
        _quiet(proc.kill)
        return
    tree.sample()
    descendants = tree.live_descendants()
    for p in descendants:
        _quiet(p.terminate)
    _quiet(proc.terminate)
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _quiet(proc.kill)
    stop_processes(descendants, max(0.0, deadline - time.monotonic()))
    kill_group(proc.pid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass


def stop_leftover(pid: int, started: float | None, grace_s: float) -> bool:
    """Stop the tree of a worker recorded by an earlier runner, if that very process still runs.

    `started` (psutil create_time) tells it apart from an unrelated process that got the same pid later.
    """
    try:
        proc = psutil.Process(pid)
        if started is None or abs(proc.create_time() - started) > 0.05 or not _running(proc):
            return False
        descendants = proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
    stop_processes([proc, *descendants], grace_s)
    return True


def kill_group(pgid: int) -> None:
    """POSIX: stragglers that left the tree but not the group (a plain fork whose parent exited)."""
    if os.name == "nt" or pgid <= 1 or pgid == os.getpgrp():  # never our own group (or a fake pid 0)
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def pipe_holders(fds: list[int]) -> list[psutil.Process]:
    """Linux: processes holding the other end of these pipes (the runner holds the read ends).

    Only the worker's descendants can hold them, including one that started its own session and was spawned
    and orphaned between two samples of the tree; /proc/PID/fd shows them all.
    """
    if not os.path.isdir("/proc/self/fd") or not fds:
        return []
    wanted = set()
    for fd in fds:
        try:
            wanted.add(f"pipe:[{os.fstat(fd).st_ino}]")
        except OSError:
            continue
    me, holders = os.getpid(), []
    for pid in psutil.pids():
        if pid != me and _holds(pid, wanted):
            try:
                holders.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
    return holders


def _holds(pid: int, wanted: set[str]) -> bool:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in wanted:
                return True
        except OSError:
            continue
    return False


def _quiet(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, OSError):
        pass
