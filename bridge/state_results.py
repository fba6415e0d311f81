"""Results kept in files: a result larger than INLINE_RESULT_BYTES lives in `.bridge/results/` and its
state.db row keeps only {name, bytes, sha256}, so one big answer does not grow the database by its size."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import safefs
from .state_format import WHOLE_STEP
from .state_records import StepRecord, dump_json

INLINE_RESULT_BYTES = 64 * 1024


def result_prefix(step_id: str, item: int) -> str:
    """Result file names start with this; neither '.' nor '~' occurs in a step id, so no prefix names another
    unit's files."""
    return f"{step_id}." if item == WHOLE_STEP else f"{step_id}~{item}."


def store_result(results_dir: Path, prefix: str, result: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(inline JSON, None) for a small result; (None, file reference) for a large one, written durably."""
    text = dump_json(result)
    data = text.encode("utf-8") if text is not None else b""
    if text is None or len(data) <= INLINE_RESULT_BYTES:
        return text, None
    digest = hashlib.sha256(data).hexdigest()
    name = f"{prefix}{digest[:16]}.json"
    safefs.replace_file(results_dir / name, data, durable=True)
    return None, {"name": name, "bytes": len(data), "sha256": digest}


def load_result(results_dir: Path, rec: StepRecord) -> str | None:
    """Read a result kept in a file into `rec.result`; None when it verifies, else why it does not."""
    ref = rec.result_file
    if ref is None or rec.result is not None:
        return None
    path = results_dir / ref["name"]
    try:
        fd = safefs.open_nofollow(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return f"result file {path} is missing"
    except (OSError, safefs.UnsafePath) as exc:
        return f"result file {path} is missing (unreadable: {exc})"
    if len(data) != ref["bytes"] or hashlib.sha256(data).hexdigest() != ref["sha256"]:
        return f"result file {path} differs from its recorded sha256"
    rec.result = json.loads(data)
    return None


def drop_result_files(results_dir: Path, prefix: str, keep: str | None) -> None:
    """A unit's older result files (its prefix), all but `keep`."""
    for name in os.listdir(results_dir):
        if name.startswith(prefix) and name != keep:
            safefs.remove_entry(results_dir / name)


def drop_unnamed_result_files(results_dir: Path, kept: Iterable[str]) -> None:
    """Result files whose name is not in `kept` (the names the records hold)."""
    kept = set(kept)
    for name in os.listdir(results_dir):
        if name not in kept:
            safefs.remove_entry(results_dir / name)
