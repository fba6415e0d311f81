"""Run-dir retention (`storybridge clean WORKDIR`): remove what a resume never needs.

A resume reads `state.db`, the committed step directories and the result files its records name
(`resume_needs`); everything else the runner leaves behind is history or debris: attempt directories (args
and stderr of every attempt), the events of older runs, staging and trash leftovers of killed runs, result
files and step directories no record names. `--all` also removes the committed outputs (the next run then
re-runs those steps: the records stay, and say "output missing").

Safety: the workdir lock is held throughout (a running runner makes `clean` refuse), nothing is followed
through a symbolic link (a planted link is removed as a link, its target is never touched), and sizes are
measured with lstat.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from . import safefs
from .lock import WorkdirLock
from .state import StateDB
from .workdir import Workdir, check_existing

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class NotAWorkdir(Exception):
    """The directory holds no runner state (exit 2)."""


def parse_age(text: str) -> float:
    """`90s`, `30m`, `12h`, `7d`, `2w` -> seconds; ValueError otherwise."""
    match = _AGE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an age like 90s, 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class ResumeNeeds:
    """What a resume reads besides state.db: entry names under `steps/` and under `.bridge/results/`."""

    committed_dirs: frozenset[str]
    result_files: frozenset[str]


def resume_needs(wd: Workdir, state: StateDB) -> ResumeNeeds:
    """The one place that knows which files the records name: adapt it when the workdir layout changes."""
    records = [state.step(sid, item) for sid, item in state.db.execute("SELECT step_id, item FROM steps")]
    return ResumeNeeds(
        # a foreach item commits into steps/ID/N: keep its step's directory (item -1 is a whole step)
        committed_dirs=frozenset(Path(r.committed_dir).parent.name if r.item >= 0 else Path(r.committed_dir).name
                                 for r in records if r and r.committed and r.committed_dir),
        result_files=frozenset(r.result_file["name"] for r in records if r and r.result_file))


@dataclass(frozen=True)
class Policy:
    keep_last: int = 1  # runs whose attempt directories and events are kept
    older_than_s: float | None = None  # only what is at least this old goes
    include_committed: bool = False  # --all


@dataclass(frozen=True)
class Removal:
    path: Path
    bytes: int
    why: str


@dataclass
class Plan:
    removals: list[Removal] = field(default_factory=list)
    events_keep: Callable[[bytes], bool] | None = None  # events.jsonl is rewritten to the lines this keeps
    events_freed: int = 0
    failures: list[str] = field(default_factory=list)  # "path: reason" of what could not be removed

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removals) + self.events_freed


def tree_bytes(path: Path) -> int:
    """Bytes of an entry and everything below it, by lstat: a link counts as itself, never as its target."""
    st = os.lstat(path)
    total = st.st_size
    if not stat.S_ISDIR(st.st_mode):
        return total
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            total += os.lstat(os.path.join(top, name)).st_size
    return total


class _Sweep:
    """Collects the removals of one clean, directory by directory."""

    def __init__(self, wd: Workdir, state: StateDB, policy: Policy, now: float):
        self.wd, self.state, self.policy = wd, state, policy
        self.cutoff = None if policy.older_than_s is None else now - policy.older_than_s
        self.plan = Plan()

    def _old_enough(self, mtime: float) -> bool:
        return self.cutoff is None or mtime <= self.cutoff

    def _entries(self, directory: Path):
        safefs.refuse_link(directory)  # a link in place of a runner directory: refuse, never list its target
        if not directory.is_dir():
            return []
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name)

    def remove_unless(self, directory: Path, keep: set[str] | frozenset[str], why: str) -> None:
        for entry in self._entries(directory):
            if entry.name not in keep and self._old_enough(entry.stat(follow_symlinks=False).st_mtime):
                self.plan.removals.append(Removal(Path(entry.path), tree_bytes(Path(entry.path)), why))

    def kept_runs(self) -> set[str]:
        runs = [row[0] for row in self.state.db.execute("SELECT run_id FROM runs ORDER BY started_at, rowid")]
        return set(runs[len(runs) - self.policy.keep_last:]) if self.policy.keep_last > 0 else set()

    def attempt_dirs(self, kept_runs: set[str]) -> None:
        """Attempt directories (`<step>-<attempt>-<rand>`, the name of the attempt's staging dir) of older runs."""
        attempts = [a for a in self.state.attempts() if a["staging_dir"]]
        keep = {Path(a["staging_dir"]).name for a in attempts if a["run_id"] in kept_runs}
        keep |= self._current_output_attempts(attempts)
        self.remove_unless(self.wd.attempts, keep, "attempt log (args, stderr) of an older run")

    def _current_output_attempts(self, attempts: list[dict]) -> set[str]:
        """The attempt behind each committed output (its args and stderr are the logs most worth keeping): the
        last committed attempt of each step or item whose record is committed."""
        committed = {(sid, item) for sid, item, status in self.state.db.execute(
            "SELECT step_id, item, status FROM steps") if status == "committed"}
        last: dict[tuple[str, int], str] = {}
        for a in attempts:  # in id order: a later commit of the same unit replaces an earlier one
            if a["status"] == "committed" and (a["step_id"], a["item"]) in committed:
                last[(a["step_id"], a["item"])] = Path(a["staging_dir"]).name
        return set(last.values())

    def events(self, kept_runs: set[str]) -> None:
        """The lines of older runs in events.jsonl (read line by line: the file can be large)."""
        path = self.wd.events
        safefs.refuse_link(path)
        if not path.is_file():
            return
        keep = partial(self._keep_event, kept_runs=kept_runs)
        with path.open("rb") as f:
            freed = sum(len(line) for line in f if not keep(line))
        if freed:
            self.plan.events_keep, self.plan.events_freed = keep, freed

    def _keep_event(self, line: bytes, *, kept_runs: set[str]) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return False  # a line cut short by a killed runner
        if not isinstance(event, dict):
            return False
        ts = event.get("ts")
        recent = isinstance(ts, (int, float)) and not self._old_enough(float(ts))
        return event.get("run_id") in kept_runs or recent


def plan_clean(wd: Workdir, state: StateDB, policy: Policy, now: float | None = None) -> Plan:
    """What `clean` removes, and why; nothing is touched."""
    sweep = _Sweep(wd, state, policy, time.time() if now is None else now)
    needs = resume_needs(wd, state)
    for directory, why in ((wd.staging, "staging leftover of a killed run"),
                           (wd.trash, "superseded output left in the trash")):
        sweep.remove_unless(directory, frozenset(), why)
    if policy.include_committed:
        sweep.remove_unless(wd.steps, frozenset(), "output (--all)")
        sweep.remove_unless(wd.results, frozenset(), "result file (--all)")
    else:
        sweep.remove_unless(wd.steps, needs.committed_dirs, "superseded output (no committed record names it)")
        sweep.remove_unless(wd.results, needs.result_files, "result file no record names")
    kept_runs = sweep.kept_runs()
    sweep.attempt_dirs(kept_runs)
    sweep.events(kept_runs)
    return sweep.plan


def apply(wd: Workdir, plan: Plan) -> None:
    """Remove what the plan lists; what could not be removed leaves `removals` for `failures` (not counted freed)."""
    done: list[Removal] = []
    for removal in plan.removals:
        failures = safefs.remove_entry_checked(removal.path)  # a link goes as a link; rmtree never follows one
        if failures:
            plan.failures.extend(failures)
        else:
            done.append(removal)
    plan.removals = done
    if plan.events_keep is not None:
        _rewrite_lines(wd.events, plan.events_keep)


def _rewrite_lines(path: Path, keep: Callable[[bytes], bool]) -> None:
    """Replace `path` by the lines `keep` accepts: streamed to a temporary file, fsynced, renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    safefs.remove_entry(tmp)
    fd = safefs.open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "wb") as out, path.open("rb") as source:
        out.writelines(line for line in source if keep(line))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def clean(root: Path, policy: Policy, *, dry_run: bool = False, now: float | None = None) -> Plan:
    """Plan (and unless `dry_run`, apply) under the workdir lock.

    Raises NotAWorkdir, lock.WorkdirLocked (a runner holds it) or safefs.UnsafePath (a link where a runner
    directory should be)."""
    wd = Workdir(root)
    safefs.refuse_link(wd.bridge)
    check_existing(root)  # as `run` does: a link or a wrong type where a runner file or directory should be
    if not wd.state_db.is_file():
        raise NotAWorkdir(f"{root} is not a storybridge workdir (no {wd.state_db})")
    with WorkdirLock(wd.lock):
        state = StateDB(wd.state_db, wd.results)
        try:
            plan = plan_clean(wd, state, policy, now)
        finally:
            state.close()
        if not dry_run:
            apply(wd, plan)
    return plan
