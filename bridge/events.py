"""Run events: JSON lines appended to WORKDIR/events.jsonl, optionally mirrored to stdout (`--events -`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from . import safefs

Listener = Callable[[dict[str, Any]], None]


def json_line(record: dict[str, Any]) -> str:
    """One JSON line; plain UTF-8 where possible, \\u escapes when a value holds a lone surrogate (which UTF-8
    cannot carry, e.g. from a worker's stderr event) rather than an exception in the middle of a run."""
    line = json.dumps(record, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True, default=str)
    return line + "\n"


class EventLog:
    def __init__(self, path: Path | None, run_id: str, mirror: TextIO | None = None):
        self.run_id = run_id
        self._file = safefs.open_append(path) if path else None  # never through a planted link
        self._mirror = mirror
        self._lock = threading.Lock()
        self.listeners: list[Listener] = []

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "ts": round(time.time(), 4), "run_id": self.run_id, **fields}
        line = json_line(record)
        with self._lock:
            if self._file:
                self._file.write(line)
                self._file.flush()
            if self._mirror:
                self._mirror.write(line)
                self._mirror.flush()
        for listener in self.listeners:
            listener(record)
        return record

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
