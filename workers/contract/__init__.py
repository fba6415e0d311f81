"""The storybridge contract: pydantic v2 models, importable without torch.

`schemas/*.schema.json` are generated from these models (`python -m bridge schema --write`).
"""

from .common import (
    ARGS_CONFIG,
    ERROR_MESSAGE_KEY,
    FILE_NAME_PATTERN,
    ModelArgs,
    WorkerArgs,
    check_file_name,
    exact,
    file_name_field,
    rule,
    schema_rules,
)
from .describe import WorkerDescription
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
    "ARGS_CONFIG",
    "ERROR_MESSAGE_KEY",
    "FILE_NAME_PATTERN",
    "WorkerDescription",
    "exact",
    "file_name_field",
    "rule",
    "schema_rules",
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
