"""What a running job may touch: its output stage, progress, logs and warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .events import emit
from .outputs import OutputStage


class JobContext:
    def __init__(self, worker: str, stage: OutputStage, request_id: str | int | None = None):
        self.worker = worker
        self.request_id = request_id
        self._stage = stage
        self.warnings: list[str] = []
        self.extra_metrics: dict[str, Any] = {}
        self.device: str | None = None

    @property
    def output_dir(self) -> Path:
        return self._stage.output_dir

    def output_path(self, name: str, media_type: str | None = None) -> Path:
        """Write output `name` here; it is committed to output_dir/name only if the job succeeds."""
        return self._stage.path(name, media_type)

    def final_path(self, name: str) -> Path:
        """Where output `name` will live after commit (for paths inside the result)."""
        return self._stage.final_path(name)

    def progress(self, fraction: float, message: str = "", **fields: Any) -> None:
        emit("progress", worker=self.worker, id=self.request_id, fraction=round(max(0.0, min(1.0, fraction)), 4),
             message=message, **fields)

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        emit("log", worker=self.worker, id=self.request_id, level=level, message=message, **fields)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(message, level="warning")
