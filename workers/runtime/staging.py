"""Staging directories and their owners: a later job may remove a stage only when no live process holds it.

Each stage is `.partial-<random>` inside output_dir, holding a lock file that its worker keeps locked
(`flock`, exclusive) for the whole job. The kernel drops the lock when the process dies, even by SIGKILL, so
"I can take the lock" means "its owner is gone": no pids, no clocks, and it works for workers in other
containers or on other hosts sharing the directory (NFS emulates flock with POSIX locks). A stage is created
under `.partial-<random>.init` and renamed only once its lock is held, so a cleaner never sees a stage it
could mistake for abandoned. Where `fcntl` does not exist (Windows), only stages older than an hour are removed.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
import uuid
from pathlib import Path

from .events import emit

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

STAGE_PREFIX = ".partial-"
INIT_SUFFIX = ".init"
LOCK_NAME = ".owner.lock"
#: A stage whose lock cannot be checked (no lock file, or no fcntl) is removed once it is this old.
UNCHECKABLE_STAGE_MAX_AGE_S = 3600.0
_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class StageDir:
    """A new staging directory whose lock this process holds until `release`."""

    def __init__(self, output_dir: Path):
        name = f"{STAGE_PREFIX}{uuid.uuid4().hex[:16]}"
        init = output_dir / f"{name}{INIT_SUFFIX}"
        init.mkdir()
        self._fd: int | None = os.open(init / LOCK_NAME, _FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a brand-new file: never contended
        self.path = output_dir / name
        os.replace(init, self.path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _age_s(path: str) -> float:
    return time.time() - os.lstat(path).st_mtime


def _owner_gone(stage: str) -> bool:
    """True when the stage's worker no longer holds its lock (or it cannot be checked and is old)."""
    if stage.endswith(INIT_SUFFIX) or fcntl is None:
        return _age_s(stage) > UNCHECKABLE_STAGE_MAX_AGE_S
    try:
        fd = os.open(os.path.join(stage, LOCK_NAME), _FLAGS)
    except FileNotFoundError:
        return _age_s(stage) > UNCHECKABLE_STAGE_MAX_AGE_S  # written by an older version
    except OSError:
        return False  # cannot tell: keep it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # BlockingIOError: a live worker holds it
        return False
    finally:
        os.close(fd)


def remove_stale_stages(output_dir: Path) -> int:
    """Delete `.partial-*` directories whose worker is gone. Never follows a symlink: only real directories
    count, and rmtree unlinks links inside instead of following them."""
    removed = 0
    try:
        entries = list(os.scandir(output_dir))
    except OSError:
        return 0
    for entry in entries:
        try:
            if not entry.name.startswith(STAGE_PREFIX) or not stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                continue
            if _owner_gone(entry.path):
                shutil.rmtree(entry.path)
                removed += 1
        except OSError as exc:  # racing another cleaner, or not ours to delete: leave it
            emit("log", level="warning", message=f"could not remove stale staging dir {entry.path}: {exc}")
    if removed:
        emit("log", level="info", message=f"removed {removed} stale staging dir(s) in {output_dir}")
    return removed
