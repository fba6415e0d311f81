"""The plain values state.db hands out (a unit's record, an attempt's end, an abandoned attempt) and the
JSON encoding of its text columns. No SQL here: `state.py` reads and writes the rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .state_format import WHOLE_STEP

#: The `steps` columns a StepRecord is built from, in `record_from_row`'s order.
STEP_COLUMNS = ("step_id, status, committed_key, components, result, outputs, committed_dir, last_key, last_error, "
                "result_file, item")


@dataclass
class StepRecord:
    step_id: str
    status: str
    committed_key: str | None
    components: dict[str, Any] | None
    result: dict[str, Any] | None  # None until `StateDB.load_result` when the result is kept in a file
    outputs: list[dict[str, Any]]
    committed_dir: str | None
    last_key: str | None
    last_error: dict[str, Any] | None
    result_file: dict[str, Any] | None = None
    item: int = WHOLE_STEP

    @property
    def committed(self) -> bool:
        return self.committed_key is not None


@dataclass
class AttemptEnd:
    status: str  # committed | failed | interrupted
    exit_code: int | None = None
    error_kind: str | None = None
    message: str | None = None
    retryable: bool | None = None
    wall_s: float = 0.0
    peak_rss_mb: float | None = None


@dataclass
class AbandonedAttempt:
    run_id: str
    step_id: str
    attempt: int
    worker_pid: int | None
    worker_started: float | None
    item: int = WHOLE_STEP


def record_from_row(row: tuple) -> StepRecord:
    """A StepRecord from a row selected with STEP_COLUMNS."""
    return StepRecord(step_id=row[0], status=row[1], committed_key=row[2], components=load_json(row[3]),
                      result=load_json(row[4]), outputs=load_json(row[5]) or [], committed_dir=row[6],
                      last_key=row[7], last_error=load_json(row[8]), result_file=load_json(row[9]), item=row[10])


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
