"""Errors as data: every failure a worker reports has a kind and a retryable flag."""

from __future__ import annotations

import errno
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from workers.contract import DEFAULT_RETRYABLE, ErrorInfo, ErrorKind

T = TypeVar("T")


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
    """Bad args or input files. Always carries `details.field_errors` (JSON paths), `$` when no field is named."""

    kind = ErrorKind.invalid_input

    def __init__(self, message: str, *, retryable: bool | None = None, details: dict[str, Any] | None = None,
                 type_: str = "invalid"):
        details = dict(details or {})
        if not details.get("field_errors"):
            details["field_errors"] = [{"path": "$", "message": message, "type": type_}]
        super().__init__(message, retryable=retryable, details=details)

    @classmethod
    def for_field(cls, path: str, message: str, *, type_: str = "invalid", detail: str | None = None,
                  **details: Any) -> InvalidInput:
        """One bad field. `path`: a JSON path (`$.images[2].path`) or a top-level field name (`audio_path`);
        `message`: what the user reads; `detail`: the field error's own text (default: the message)."""
        json_path = path if path.startswith("$") else f"$.{path}"
        return cls(message, details={**details, "field_errors": [
            {"path": json_path, "message": detail or message, "type": type_}]})


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


#: How allocation failures read in the libraries our workers use (lower-cased substrings).
_OUT_OF_MEMORY_TEXT = (
    "out of memory",                       # torch CUDA/MPS, CTranslate2 "CUDA failed with error out of memory"
    "can't allocate memory",               # torch CPU: "DefaultCPUAllocator: can't allocate memory"
    "cannot allocate memory",              # strerror(ENOMEM), e.g. from mmap or fork
    "failed to allocate memory",           # MKL: "mkl_malloc: failed to allocate memory"
    "std::bad_alloc",                      # CTranslate2 / other C++ code
    "memory allocation failed",            # OpenBLAS, cuBLAS "CUBLAS_STATUS_ALLOC_FAILED" text
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "not enough memory",                   # torch on Windows, oneDNN
    "insufficient memory",
    "could not create a memory object",    # oneDNN (torch and CTranslate2 CPU kernels)
    "failed to map segment",               # dlopen of a shared library (numpy, ctranslate2, onnxruntime) on ENOMEM
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def out_of_memory_evidence(exc: BaseException) -> str | None:
    """The line that shows an allocation failure (Python, torch, CTranslate2, MKL/OpenBLAS, the OS or the dynamic
    loader) anywhere in the exception chain, or None. Matched by type name and text: torch is never imported."""
    for item in _chain(exc):
        if isinstance(item, MemoryError) or type(item).__name__ == "OutOfMemoryError":
            return f"{type(item).__name__}: {item}".rstrip(": ")
        if isinstance(item, OSError) and item.errno == errno.ENOMEM:
            return str(item)
        if isinstance(item, (RuntimeError, OSError, ValueError, ImportError)):
            for line in str(item).splitlines():
                if any(text in line.lower() for text in _OUT_OF_MEMORY_TEXT):
                    return line.strip()[:500]
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    return out_of_memory_evidence(exc) is not None


def out_of_memory(exc: BaseException, stage: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"Out of memory while {stage}: {out_of_memory_evidence(exc) or _first_line(exc)}. Free GPU/host memory "
        "(or run fewer jobs at once), lower the resolution, batch size or precision, or retry later.",
        details={"exception_type": _type_name(exc), "stage": stage},
    )


#: Kinds that a wrapped allocation failure may hide behind (the load path used to call every error "model
#: unavailable").
_MAY_HIDE_OUT_OF_MEMORY = frozenset({ErrorKind.model_unavailable, ErrorKind.internal})


def classify_exception(exc: BaseException, stage: str = "running the job") -> WorkerError:
    """Map any exception to a WorkerError; unexpected ones become `internal` with their traceback in details.

    An allocation failure is `resource` even where worker code wrapped it as "model unavailable" or internal;
    a deliberate verdict (invalid input, external, ...) stands."""
    if isinstance(exc, WorkerError) and exc.kind not in _MAY_HIDE_OUT_OF_MEMORY:
        return exc
    if is_out_of_memory(exc):
        return exc if isinstance(exc, ResourceExhausted) else out_of_memory(exc, stage)
    if isinstance(exc, WorkerError):
        return exc
    details: dict[str, Any] = {"exception_type": _type_name(exc), "stage": stage}
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"Disk full while {stage}: {exc}", details=details)
    details["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return InternalError(f"Unexpected {type(exc).__name__} while {stage}: {_first_line(exc)}", details=details)


def _type_name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


class FieldErrors:
    """Collects bad fields so that one answer reports them all, instead of the first one found."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self.messages: list[str] = []

    def add(self, path: str, message: str, type_: str) -> None:
        self.items.append({"path": path, "message": message, "type": type_})
        self.messages.append(f"{path}: {message}")

    def attempt(self, check: Callable[..., T], *args: Any) -> T | None:
        """Run a check; an InvalidInput it raises is recorded (with its field errors) instead of propagating."""
        try:
            return check(*args)
        except InvalidInput as exc:
            self.items.extend(exc.details["field_errors"])
            self.messages.append(exc.message)
            return None

    def raise_if_any(self, what: str = "invalid input") -> None:
        if not self.items:
            return
        message = self.messages[0] if len(self.messages) == 1 else f"{what}: {joined(self.messages)}"
        raise InvalidInput(message, details={"field_errors": self.items})


def joined(lines: list[str], shown: int = 5) -> str:
    """The first `shown` problems of a list, `; `-separated, with how many more there are."""
    more = f" (and {len(lines) - shown} more)" if len(lines) > shown else ""
    return "; ".join(lines[:shown]) + more
