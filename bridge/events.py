"""Run events: JSON lines appended to WORKDIR/events.jsonl, optionally mirrored to stdout (`--events -`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

Listener = Callable[[dict[str, Any]], None]


class EventLog:
    def __init__(self, path: Path | None, run_id: str, mirror: TextIO | None = None):
        self.run_id = run_id
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed in close()
        self._mirror = mirror
        self._lock = threading.Lock()
        self.listeners: list[Listener] = []

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "ts": round(time.time(), 4), "run_id": self.run_id, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
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

