"""The shared worker runtime: contract handling, stdout discipline, warm mode. No torch here."""

from .cli import main, run_worker
from .context import JobContext
from .errors import (
    ExternalError,
    FieldErrors,
    InternalError,
    InvalidInput,
    ModelUnavailable,
    ResourceExhausted,
    TransientError,
    WorkerError,
    classify_exception,
    is_out_of_memory,
)
from .paths import check_allowed, input_file
from .worker import Worker

__all__ = [
    "ExternalError",
    "FieldErrors",
    "InternalError",
    "InvalidInput",
    "JobContext",
    "ModelUnavailable",
    "ResourceExhausted",
    "TransientError",
    "Worker",
    "WorkerError",
    "check_allowed",
    "classify_exception",
    "input_file",
    "is_out_of_memory",
    "main",
    "run_worker",
]
