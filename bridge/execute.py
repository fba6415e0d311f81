"""One attempt's files and its atomic commit (docs/runner.md, Execution), plus the retry rules.

The coordinator calls these; nothing here decides what runs or keeps run state.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import safefs
from .answer import WORKER_KINDS, AttemptOutcome
from .manifest import RetryPolicy
from .refs import map_strings
from .state import WHOLE_STEP, AttemptEnd, StateDB
from .states import State
from .workdir import Workdir
from .worker_client import AttemptFiles


@dataclass
class Committed:
    result: Any
    key: str
    directory: str


def prepare_attempt(wd: Workdir, tag_base: str, attempt: int) -> AttemptFiles:
    """A fresh staging dir (the worker's output_dir) and the paths of the attempt's args file and stderr log."""
    tag = f"{tag_base}-{attempt}-{uuid.uuid4().hex[:8]}"
    staging = wd.staging / tag
    staging.mkdir(exist_ok=True)  # the name is random: it exists only when prepared on purpose (tests do)
    safefs.refuse_link(staging)  # ... and then it must be a real directory, never a link to elsewhere
    return AttemptFiles(args_file=wd.attempts / tag / "args.json", stderr_log=wd.attempts / tag / "stderr.log",
                        staging_dir=staging.resolve())


def final_dir(wd: Workdir, sid: str, item: int) -> Path:
    """steps/ID for a step; steps/ID/N for item N of a foreach step."""
    base = wd.steps.resolve() / sid
    return base if item == WHOLE_STEP else base / str(item)


def commit(wd: Workdir, state: StateDB, sid: str, item: int, staging: Path, outcome: AttemptOutcome, key: str,
           components: dict[str, Any], row: int | None) -> Committed:
    """Atomic rename of the staging dir into place, then the durable record (see docs/runner.md)."""
    envelope = outcome.envelope or {}
    final = final_dir(wd, sid, item)
    if item != WHOLE_STEP:
        safefs.refuse_link(final.parent)
        final.parent.mkdir(exist_ok=True)
    result = rewrite_prefix(envelope.get("result"), str(staging), str(final))
    outputs = rewrite_prefix(envelope.get("outputs") or [], str(staging), str(final))
    trash = None
    if os.path.lexists(final):
        trash = wd.trash / f"{sid}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)  # a rename moves a planted link itself, never what it points to
    os.replace(staging, final)
    state.commit_step(sid, key, components, result, outputs, str(final), row, attempt_end(outcome), item=item)
    if trash is not None:
        state.forget_hashes_under(str(final))  # the replaced files' memo rows (never pruned otherwise)
    remember_output_hashes(state, outputs)
    if trash is not None:
        safefs.remove_entry(trash)
    return Committed(result=result, key=key, directory=str(final))


def remember_output_hashes(state: StateDB, outputs: list[dict[str, Any]]) -> None:
    """The outputs' sha256 memoised by (path, size, mtime, inode, ctime) of the committed files, so neither a
    downstream step's cache key nor a resume's verification reads a large clip again. An output below
    TRUST_REPORTED_SHA_BYTES was hashed in staging; a larger one was checked by size only, so its memoised
    sha256 is the one the worker reported (trusted: it hashed the file as it wrote it)."""
    for out in outputs:
        try:
            st = os.stat(out["path"], follow_symlinks=False)
        except OSError:
            continue
        if st.st_size == out["bytes"]:
            state.store_hash(out["path"], st, out["sha256"])


def should_retry(outcome: AttemptOutcome, retry_on: list[str]) -> bool:
    if outcome.kind not in retry_on:
        return False
    if outcome.kind in WORKER_KINDS:
        return outcome.retryable  # the worker knows best; it may say a transient-looking error is final
    return True


def why_given_up(outcome: AttemptOutcome, policy: RetryPolicy) -> str:
    if outcome.kind not in policy.retry_on:
        return f"'{outcome.kind}' is not retried"
    if not should_retry(outcome, policy.retry_on):
        return "the worker said retryable=false"
    return "retries exhausted"


def backoff_s(policy: RetryPolicy, attempt: int, jitter: float) -> float:
    """The wait before the attempt after `attempt`; `jitter` is a random number in [0, 1)."""
    delay = policy.backoff_s[min(attempt - 1, len(policy.backoff_s) - 1)]
    return delay * (1 + jitter * policy.jitter_fraction)


def attempt_state(outcome: AttemptOutcome) -> State:
    if outcome.ok:
        return State.COMMITTED
    return State.INTERRUPTED if outcome.kind == "interrupted" else State.FAILED


def attempt_end(outcome: AttemptOutcome) -> AttemptEnd:
    return AttemptEnd(status=attempt_state(outcome).value, exit_code=outcome.exit_code, error_kind=outcome.kind,
                      message=outcome.message or None, retryable=None if outcome.ok else outcome.retryable,
                      wall_s=outcome.wall_s, peak_rss_mb=outcome.peak_rss_mb)


def rewrite_prefix(value: Any, old: str, new: str) -> Any:
    """Strings equal to `old` or under `old/` get the `new` prefix instead (a predictable rewrite only)."""

    def rewrite(text: str) -> str:
        for sep in {os.sep, "/"}:
            if text == old:
                return new
            if text.startswith(old + sep):
                return new + text[len(old):]
        return text

    return map_strings(value, rewrite)
