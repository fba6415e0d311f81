"""The workdir's layout, and the checks that make it safe to use.

The workdir itself may be a link (to a bigger disk, say): that is the user's choice. Below it, the runner
refuses any of its own paths that is a symbolic link or of the wrong type, before it takes the lock, and from
then on creates, writes and deletes only through no-follow operations (`safefs`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from . import safefs

#: Directories the runner owns, created at start; `.bridge` first, because the others live in it.
DIRS = (".bridge", ".bridge/staging", ".bridge/trash", ".bridge/attempts", ".bridge/results", "steps")
#: Files the runner owns (written in place or replaced by rename).
FILES = (".bridge/lock", ".bridge/state.db", ".bridge/state.db-wal", ".bridge/state.db-shm",
         ".bridge/state.db-journal", "events.jsonl", "trace.json", "trace.json.tmp")


class WorkdirUnusable(Exception):
    """The workdir cannot be created or used (exit 2): the message names the path and the reason."""


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def bridge(self) -> Path:
        return self.root / ".bridge"

    @property
    def staging(self) -> Path:
        return self.bridge / "staging"

    @property
    def trash(self) -> Path:
        return self.bridge / "trash"

    @property
    def attempts(self) -> Path:
        return self.bridge / "attempts"

    @property
    def results(self) -> Path:
        return self.bridge / "results"

    @property
    def steps(self) -> Path:
        return self.root / "steps"

    @property
    def lock(self) -> Path:
        return self.bridge / "lock"

    @property
    def state_db(self) -> Path:
        return self.bridge / "state.db"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def trace(self) -> Path:
        return self.root / "trace.json"


def prepare(root: Path) -> Workdir:
    """Create the workdir and the runner's directories in it; refuse links and wrong types.

    Raises WorkdirUnusable or safefs.UnsafePath.
    """
    _create_root(root)
    for rel in DIRS:
        _check_entry(root / rel, stat.S_ISDIR, "a directory")
        try:
            (root / rel).mkdir(exist_ok=True)
        except OSError as exc:
            raise WorkdirUnusable(f"cannot create {root / rel}: {exc.strerror or exc}") from None
    for rel in FILES:
        _check_entry(root / rel, stat.S_ISREG, "a regular file")
    return Workdir(root)


def check_existing(root: Path) -> Workdir:
    """The checks `prepare` makes on an existing workdir, creating nothing (for commands that read or trim it):
    no link and no wrong type where a runner directory or file should be.

    Raises WorkdirUnusable or safefs.UnsafePath."""
    for rel in DIRS:
        _check_entry(root / rel, stat.S_ISDIR, "a directory")
    for rel in FILES:
        _check_entry(root / rel, stat.S_ISREG, "a regular file")
    return Workdir(root)


def _create_root(root: Path) -> None:
    if os.path.lexists(root) and not root.is_dir():
        raise WorkdirUnusable(f"workdir {root} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkdirUnusable(f"workdir {root} cannot be created: {exc.strerror or exc}"
                              + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else "")) from None


def _check_entry(path: Path, is_kind, kind: str) -> None:
    safefs.refuse_link(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not is_kind(mode):
        raise WorkdirUnusable(f"{path} should be {kind}; the runner will not replace it: move it away")


def clean_scratch(wd: Workdir) -> None:
    """Staging dirs and trash of earlier (killed) runs: never committed, safe to drop under the lock."""
    for directory in (wd.staging, wd.trash):
        _check_entry(directory, stat.S_ISDIR, "a directory")  # checked again right before deleting below it
        safefs.empty_dir(directory)
