"""Reusing a foreach item's committed output under another index.

Items are stored by index (steps/ID/N), but an item's key does not count its index (unless its args use
`${index}`). When the list changes shape, say an item is inserted at the front, item N's key equals the
committed key of item M of the earlier list. Instead of running it again, the runner links (or copies) M's
committed files into a staging directory, rewrites M's paths in the result and outputs, verifies them like an
attempt's, and commits them as item N: a cache hit, reason "reused".

An item decided to run over a committed record with another key will replace that directory, and a later
index may want it: it is first linked into a holding directory under `.bridge/trash/` (removed when the step
settles; with the trash, at the next run's start, after a kill).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from . import execute, safefs
from .answer import AttemptOutcome, verify_outputs
from .planner import Decision
from .state import StateDB, StepRecord
from .states import Action
from .workdir import Workdir


class ItemReuse:
    def __init__(self, wd: Workdir, state: StateDB):
        self.wd, self.state = wd, state
        self._held: dict[str, dict[str, tuple[Path, StepRecord]]] = {}  # step -> key -> (held copy, its record)
        self._holding: dict[str, Path] = {}

    def reuse(self, d: Decision) -> Decision:
        """`d` (an item decided to run), or a cache hit on another item's committed output with the same key."""
        if d.action != Action.RUN or d.key is None or d.components is None:
            return d
        sid, item = d.step, d.item
        own = self.state.step(sid, item)
        if own is not None and own.committed and own.committed_key != d.key:
            self._hold(sid, own)
        source = self._held.get(sid, {}).pop(d.key, None) or self._in_place(sid, item, d.key)
        if source is None or not self._commit_copy(sid, item, source, d):
            return d
        d.action, d.record = Action.SKIP, self.state.step(sid, item)
        self.state.load_result(d.record)  # a large result is kept in a file; it was verified just now
        d.reason = f"reused the committed output of item {source[1].item} (same key; the list changed)"
        return d

    def hold_past(self, sid: str, count: int) -> None:
        """The list got shorter: the items past its end are forgotten, but an earlier index may want them."""
        for item, rec in self.state.step_items(sid).items():
            if item >= count and rec.committed:
                self._hold(sid, rec)

    def drop(self, sid: str) -> None:
        """The step settled: what was held for it goes."""
        self._held.pop(sid, None)
        holding = self._holding.pop(sid, None)
        if holding is not None:
            safefs.remove_entry(holding)

    def _hold(self, sid: str, rec: StepRecord) -> None:
        if self.state.load_result(rec) is not None:  # its result file goes with the row: keep it in memory
            return
        holding = self._holding.setdefault(sid, self.wd.trash / f"reuse-{sid}-{uuid.uuid4().hex[:8]}")
        holding.mkdir(exist_ok=True)
        copy = holding / str(rec.item)
        if not copy.exists() and _link_tree(Path(rec.committed_dir or ""), copy):
            self._held.setdefault(sid, {})[rec.committed_key or ""] = (copy, rec)

    def _in_place(self, sid: str, item: int, key: str) -> tuple[Path, StepRecord] | None:
        """A committed item of this step, at another index, with this key (not replaced yet)."""
        for rec in self.state.committed_items_with_key(sid, key):
            if rec.item != item and self.state.load_result(rec) is None:
                return Path(rec.committed_dir or ""), rec
        return None

    def _commit_copy(self, sid: str, item: int, source: tuple[Path, StepRecord], d: Decision) -> bool:
        directory, rec = source
        files = execute.prepare_attempt(self.wd, f"{sid}.{item}-reuse", 0)
        staging = files.staging_dir
        safefs.remove_entry(staging)
        if not _link_tree(directory, staging):
            return False
        # the record names its own directory; its files are now in staging (held copies included)
        result = execute.rewrite_prefix(rec.result, str(rec.committed_dir), str(staging))
        outputs = execute.rewrite_prefix(rec.outputs, str(rec.committed_dir), str(staging))
        if verify_outputs(outputs, inside=staging):  # hashed again: what is committed is always verified
            safefs.remove_entry(staging)
            return False
        outcome = AttemptOutcome(ok=True, envelope={"result": result, "outputs": outputs})
        execute.commit(self.wd, self.state, sid, item, staging, outcome, d.key or "", d.components or {}, None)
        return True


def _link_tree(source: Path, target: Path) -> bool:
    """`target` gets `source`'s files as hard links (copies across file systems); False (and nothing left)
    when `source` is not a plain directory tree of regular files."""
    if not source.is_dir() or source.is_symlink():
        return False
    try:
        target.mkdir()
        for root, dirs, names in os.walk(source):
            rel = Path(root).relative_to(source)
            for name in dirs:
                if (Path(root) / name).is_symlink():
                    raise OSError(f"{Path(root) / name} is a link")
                (target / rel / name).mkdir()
            for name in names:
                src = Path(root) / name
                if src.is_symlink() or not src.is_file():
                    raise OSError(f"{src} is not a regular file")
                try:
                    os.link(src, target / rel / name)
                except OSError:
                    shutil.copy2(src, target / rel / name)
    except OSError:
        safefs.remove_entry(target)
        return False
    return True
