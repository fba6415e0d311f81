"""Progress and logs: JSON lines on stderr, never on stdout."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import orjson

_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one `{"event": ..., "ts": ...}` JSON line to stderr."""
    line = orjson.dumps({"event": event, "ts": round(time.time(), 3), **fields}, default=str) + b"\n"
    with _lock:
        stream = sys.__stderr__ or sys.stderr
        try:
            stream.buffer.write(line)  # type: ignore[union-attr]
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass  # stderr closed or not binary: progress is best-effort, the result is not


class JsonLinesLogHandler(logging.Handler):
    """Route library logging (diffusers, transformers, faster_whisper) into `log` events."""

    def __init__(self, worker: str):
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102 - logging API
        try:
            emit("log", worker=self.worker, level=record.levelname.lower(), logger=record.name, message=record.getMessage())
        except Exception:  # logging must never break the job
            self.handleError(record)


def install_log_handler(worker: str, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, JsonLinesLogHandler) for h in root.handlers):
        root.addHandler(JsonLinesLogHandler(worker))
    if root.level > level:
        root.setLevel(level)
