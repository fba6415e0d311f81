"""The result envelope every worker prints: one JSON document, whatever the worker.

Only `result` varies between workers; everything a host needs to decide what
happened (success, error kind, retryable, exit code) is here.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .version import CONTRACT_VERSION


class ErrorKind(str, Enum):
    """Why a job failed. Each kind has its own exit code (see EXIT_CODES)."""

    invalid_input = "invalid_input"
    model_unavailable = "model_unavailable"
    resource = "resource"
    transient = "transient"
    external = "external"
    internal = "internal"


#: Process exit code per outcome. 0 is success; 1 is deliberately unused so
#: that Python's own crash exit (uncaught exception) is never mistaken for a
#: classified error. 2 matches argparse's usage-error convention.
EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.invalid_input: 2,
    ErrorKind.model_unavailable: 3,
    ErrorKind.resource: 4,
    ErrorKind.transient: 5,
    ErrorKind.external: 6,
    ErrorKind.internal: 7,
}
EXIT_SUCCESS = 0

#: Whether a retry can help, when the worker does not say otherwise.
DEFAULT_RETRYABLE: dict[ErrorKind, bool] = {
    ErrorKind.invalid_input: False,
    ErrorKind.model_unavailable: False,
    ErrorKind.resource: True,
    ErrorKind.transient: True,
    ErrorKind.external: True,
    ErrorKind.internal: False,
}


class FieldError(BaseModel):
    """One bad field of an args document."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="JSON path of the bad field, e.g. `$.formats[1]`.")
    message: str
    type: str = Field(description="Machine-readable error type, e.g. `missing`, `greater_than`.")


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ErrorKind
    message: str = Field(description="What went wrong and what the user can do about it.")
    retryable: bool
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Structured extra data: `field_errors` (list of FieldError) for invalid_input, "
        "`traceback` for internal, `exception_type`, …",
    )


class OutputFile(BaseModel):
    """A file the worker produced, inside its `output_dir`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Absolute path of the file.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    media_type: str = Field(description="IANA media type, e.g. `image/png`, `text/vtt`.")


class Metrics(BaseModel):
    """Timings and memory of one job. Extra worker-specific numbers are allowed."""

    model_config = ConfigDict(extra="allow")

    load_s: float = Field(ge=0, description="Seconds spent loading (or fetching from the warm cache) the model.")
    run_s: float = Field(ge=0, description="Seconds spent running the job after the model was ready.")
    peak_rss_mb: float = Field(ge=0, description="Peak resident memory of the worker process so far.")
    peak_vram_mb: float | None = Field(default=None, description="Peak CUDA memory allocated, where known.")
    device: str | None = Field(default=None, description="Device the job ran on, e.g. `cpu`, `cuda:0`.")
    model_cache_hit: bool | None = Field(
        default=None, description="True when a warm worker reused an already loaded model."
    )
    model_loads: int | None = Field(default=None, ge=0, description="Models loaded by this process so far.")


class ResultEnvelope(BaseModel):
    """The one JSON document a worker writes to stdout (one-shot) or per request (warm)."""

    model_config = ConfigDict(extra="forbid")

    contract_version: str = Field(default=CONTRACT_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    worker: str = Field(description="Worker name, e.g. `whisper`.")
    worker_version: str
    success: bool
    result: dict[str, Any] | None = Field(
        default=None, description="Worker-specific result (see `<worker>.result.schema.json`); null on failure."
    )
    error: ErrorInfo | None = Field(default=None, description="Null on success.")
    outputs: list[OutputFile] = Field(default_factory=list)
    metrics: Metrics | None = Field(default=None, description="Null only when the job never started.")
    warnings: list[str] = Field(default_factory=list)
