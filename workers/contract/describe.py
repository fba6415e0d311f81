"""The `--describe` answer: who a worker is and what it can run on, without loading a model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .version import CONTRACT_VERSION


class WorkerDescription(BaseModel):
    """One JSON document on stdout for `python -m workers.<name> --describe` (exit 0)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Worker name, e.g. `whisper`.")
    version: str = Field(description="Worker version; part of a runner's cache key.")
    contract_version: str = Field(default=CONTRACT_VERSION, pattern=r"^\d+\.\d+\.\d+$",
                                  description="Contract version the worker speaks; it accepts args of the same major.")
    devices: list[str] = Field(description="Devices it could use: `cpu`, `cuda:0`, ... (probed without loading a model).")
    python: str = Field(description="Python version of the worker process.")
    platform: str = Field(description="`sys.platform` of the worker process, e.g. `linux`, `win32`.")
    pid: int = Field(ge=0, description="Process id of the worker that answered.")
    warm: bool | None = Field(default=None, description="True: the worker speaks `--serve` (warm mode). Absent "
                              "(a one-shot worker, or one older than contract 1.2): run it once per job.")
    model_key_fields: list[str] | None = Field(
        default=None, description="Top-level args fields that together identify a loaded model: requests equal in "
        "these fields can share a warm process without a reload. Absent: every request may need a reload.")
