"""One runner per workdir: an OS file lock on `.bridge/lock` (released by the OS if the runner dies).

The lock file is opened without following links and must be a plain file with one name (safefs.open_nofollow).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import psutil

from . import safefs


class WorkdirLocked(RuntimeError):
    pass


class WorkdirLock:
    """fcntl.flock on POSIX, msvcrt.locking on Windows; the file records who holds it (for the message)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        # Never through a link, never a hard-linked or special file: the lock is truncated below, and
        # truncating a file the runner did not create would destroy someone else's data.
        fd = safefs.open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            _lock(fd)
        except OSError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise WorkdirLocked(f"workdir {self.path.parent.parent} is in use by another runner ({holder}); "
                                "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        pid = int(info.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return "holder unknown"
    alive = pid > 0 and psutil.pid_exists(pid)
    return f"pid {pid} on {info.get('host', '?')}" + ("" if alive else ", not running here")


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        # Lock a byte far past the holder info, so the info stays readable by the refused runner.
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
