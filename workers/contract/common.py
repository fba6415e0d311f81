"""Fields every worker's args share."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .version import CONTRACT_VERSION

_SEMVER = r"^\d+\.\d+\.\d+$"
# A plain file name: no directory part, no traversal, no control characters.
_SAFE_NAME = re.compile(r"^(?!\.{1,2}$)[^/\\\x00-\x1f:*?\"<>|]+$")


def check_file_name(value: str) -> str:
    """Reject names that would let a worker write outside its output_dir."""
    if not _SAFE_NAME.match(value) or value.strip() != value:
        raise ValueError(
            f"{value!r} is not a plain file name (no '/', '\\', '..', ':' or control characters allowed)"
        )
    return value


class WorkerArgs(BaseModel):
    """Base of every worker's args document. Unknown fields are rejected (typos fail loudly)."""

    model_config = ConfigDict(extra="forbid")

    contract_version: str = Field(
        default=CONTRACT_VERSION,
        pattern=_SEMVER,
        description="Contract version the host speaks; a worker refuses another major version.",
    )
    output_dir: str = Field(
        min_length=1, description="Directory the worker writes into (created if missing). Nothing is written outside it."
    )


class ModelArgs(WorkerArgs):
    """Args of a worker that loads a model."""

    model: str = Field(
        min_length=1,
        description="A local model directory, or a model name / hub id resolved from the local cache only.",
    )
    allow_download: bool = Field(
        default=False, description="Allow fetching a missing model from its hub. Off: no network access."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow running Python code shipped with a model. Off unless you trust it."
    )

    @field_validator("model")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()
