"""Errors as data: every failure a worker reports has a kind and a retryable flag."""

from __future__ import annotations

import errno
import traceback
from typing import Any

from workers.contract import DEFAULT_RETRYABLE, ErrorInfo, ErrorKind


class WorkerError(Exception):
    """A classified failure. Raise a subclass from worker code; the runtime reports it."""

    kind: ErrorKind = ErrorKind.internal

    def __init__(self, message: str, *, retryable: bool | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = DEFAULT_RETRYABLE[self.kind] if retryable is None else retryable
        self.details = details or {}

    def info(self) -> ErrorInfo:
        return ErrorInfo(kind=self.kind, message=self.message, retryable=self.retryable, details=self.details)


class InvalidInput(WorkerError):
    kind = ErrorKind.invalid_input


class ModelUnavailable(WorkerError):
    kind = ErrorKind.model_unavailable


class ResourceExhausted(WorkerError):
    kind = ErrorKind.resource


class TransientError(WorkerError):
    kind = ErrorKind.transient


class ExternalError(WorkerError):
    kind = ErrorKind.external


class InternalError(WorkerError):
    kind = ErrorKind.internal


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError, matched by name so torch is never imported here.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    # torch: "CUDA out of memory"; CTranslate2: "CUDA failed with error out of memory".
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def classify_exception(exc: BaseException) -> WorkerError:
    """Map any exception to a WorkerError; unexpected ones become `internal` with their traceback in details."""
    if isinstance(exc, WorkerError):
        return exc
    details: dict[str, Any] = {"exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    if _is_out_of_memory(exc):
        return ResourceExhausted(
            f"Out of memory: {exc}. Free GPU/host memory, lower the resolution or batch size, or retry later.",
            details=details,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"Disk full while writing outputs: {exc}", details=details)
    details["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return InternalError(f"Unexpected {type(exc).__name__}: {exc}", details=details)


def require_module(module: str, extra: str) -> None:
    """Fail with an actionable message when a worker's optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModelUnavailable(
            f"Python package '{module}' is not installed; install the worker's extra: pip install 'storybridge[{extra}]'",
            details={"missing_module": module, "extra": extra},
        )
