"""Warm-mode (`--serve`) messages: JSON lines on stdin and stdout.

Requests (stdin, one per line):
  {"op": "run", "id": "a1", "args": {...}}   (`op` may be omitted when `args` is present)
  {"op": "ping", "id": "p1"}
  {"op": "shutdown", "id": "s1"}

Responses (stdout, one per line, each with an `event`):
  {"event": "ready", ...}                     once, before any request is read
  {"event": "result", "id": "a1", ...envelope fields}
  {"event": "pong", "id": "p1", ...}
  {"event": "shutdown", "id": "s1"}            then the process exits 0
  {"event": "shutdown", "reason": "signal"}    SIGTERM/SIGINT while idle; exit 5 (a job in flight is
                                              answered first, with a `transient` result marked cancelled)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .envelope import ResultEnvelope
from .version import CONTRACT_VERSION


class ServeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["run", "ping", "shutdown"] = "run"
    id: str | int | None = Field(default=None, description="Echoed back in the response.")
    args: dict[str, Any] | None = Field(default=None, description="The worker's args document, for `run`.")


class ServeReady(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Literal["ready"] = "ready"
    contract_version: str = CONTRACT_VERSION
    worker: str
    worker_version: str
    pid: int


class ServeResult(ResultEnvelope):
    event: Literal["result"] = "result"
    id: str | int | None = None


class ServePong(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Literal["pong"] = "pong"
    id: str | int | None = None
    loaded_models: list[str] = Field(default_factory=list, description="Keys of models held in memory.")


class ServeShutdown(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Literal["shutdown"] = "shutdown"
    id: str | int | None = Field(default=None, description="The shutdown request's id; null when not asked for.")
    reason: Literal["request", "signal"] = Field(
        default="request",
        description="`request`: a shutdown op (exit 0). `signal`: SIGTERM/SIGINT while idle (exit 5).")
