"""The storybridge contract: pydantic v2 models, importable without torch.

`schemas/*.schema.json` are generated from these models (`python -m bridge schema --write`).
"""

from .common import ModelArgs, WorkerArgs, check_file_name
from .envelope import (
    DEFAULT_RETRYABLE,
    EXIT_CODES,
    EXIT_SUCCESS,
    ErrorInfo,
    ErrorKind,
    FieldError,
    Metrics,
    OutputFile,
    ResultEnvelope,
)
from .version import CONTRACT_MAJOR, CONTRACT_VERSION

__all__ = [
    "CONTRACT_MAJOR",
    "CONTRACT_VERSION",
    "DEFAULT_RETRYABLE",
    "EXIT_CODES",
    "EXIT_SUCCESS",
    "ErrorInfo",
    "ErrorKind",
    "FieldError",
    "Metrics",
    "ModelArgs",
    "OutputFile",
    "ResultEnvelope",
    "WorkerArgs",
    "check_file_name",
]
