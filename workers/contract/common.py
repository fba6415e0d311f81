"""Fields every worker's args share, and the pattern helpers that keep the schema and the worker in step.

The args models are strict (no coercion: `"5"` is not an integer, `0` is not a boolean) and every rule
they enforce is also in the generated JSON Schema, so a host that validates with `schemas/` gets the
worker's verdict. Patterns are written once here and used by both sides (pydantic runs them with Python's
`re`, like the `jsonschema` package; they also mean the same in ECMA-262 for ajv or .NET hosts).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from .version import CONTRACT_MAJOR, CONTRACT_VERSION

#: Extension keyword: the message a validator should show when the subschema holding it fails.
ERROR_MESSAGE_KEY = "x-error-message"


def exact(body: str) -> str:
    """An anchored pattern for `body` alone.

    Python's `$` also matches before a final newline ("cpu\\n" would pass `^cpu$`), ECMA's does not; the
    `(?!\\n)` guard makes both engines give the same verdict.
    """
    return f"^(?:{body})(?!\\n)$"


#: No control characters, no leading or trailing space.
TRIMMED_TEXT_PATTERN = exact(r"[^\x00-\x20](?:[^\x00-\x1f]*[^\x00-\x20])?")
#: A plain file name: no directory part, no traversal, no characters Windows forbids, no control characters,
#: no leading or trailing space.
FILE_NAME_PATTERN = exact(r'(?!\.\.?(?!\n)$)[^/\\\x00-\x20:*?"<>|](?:[^/\\\x00-\x1f:*?"<>|]*[^/\\\x00-\x20:*?"<>|])?')
FILE_NAME_MESSAGE = "a plain file name: no '/', '\\', '..', ':', '*', '?', '\"', '<', '>', '|', control characters or edge spaces"
CONTRACT_VERSION_PATTERN = exact(rf"{CONTRACT_MAJOR}\.[0-9]+\.[0-9]+")

_FILE_NAME = re.compile(FILE_NAME_PATTERN)


def check_file_name(value: str) -> str:
    """Reject names that would let a worker write outside its output_dir (same rule as FILE_NAME_PATTERN)."""
    if not _FILE_NAME.search(value):
        raise ValueError(f"{value!r} is not {FILE_NAME_MESSAGE}")
    return value


def file_name_field(**kwargs) -> object:
    """A pydantic Field for an output file name (stem), with its pattern and message in the schema."""
    return Field(pattern=FILE_NAME_PATTERN, json_schema_extra={ERROR_MESSAGE_KEY: f"must be {FILE_NAME_MESSAGE}"},
                 **kwargs)


#: Config every args model shares: unknown fields are errors, types are strict, patterns use Python `re`.
ARGS_CONFIG = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


class WorkerArgs(BaseModel):
    """Base of every worker's args document. Unknown fields are rejected (typos fail loudly).

    Rules for subclasses, so the schema and the worker always agree (a property test checks it):
    `Literal` rather than `Enum`, lists rather than tuples, patterns via `exact()`, and every cross-field
    rule also expressed in the schema (`allOf` of `if`/`then`, see `schema_rules`).
    """

    model_config = ARGS_CONFIG

    contract_version: str = Field(
        default=CONTRACT_VERSION,
        pattern=CONTRACT_VERSION_PATTERN,
        description=f"Contract version the host speaks (semver). A worker refuses another major version; "
        f"this one speaks {CONTRACT_MAJOR}.x.",
        json_schema_extra={ERROR_MESSAGE_KEY: f"this worker speaks contract {CONTRACT_VERSION} (major "
                           f"{CONTRACT_MAJOR}); send a {CONTRACT_MAJOR}.x version"},
    )
    output_dir: str = Field(
        min_length=1,
        description="Directory the worker writes into (created if missing; relative paths resolve against the "
        "worker's cwd). Nothing is written outside it. Checked by the worker: it must be, or be creatable as, a "
        "writable directory under the allowed roots.",
    )


class ModelArgs(WorkerArgs):
    """Args of a worker that loads a model."""

    model: str = Field(
        pattern=TRIMMED_TEXT_PATTERN,
        description="A local model directory, or a model name / hub id resolved from the local cache only.",
        json_schema_extra={ERROR_MESSAGE_KEY: "must be a model name or directory without control characters or "
                           "leading/trailing spaces"},
    )
    allow_download: bool = Field(
        default=False, description="Allow fetching a missing model from its hub. Off: no network access."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow running Python code shipped with a model. Off unless you trust it."
    )


def schema_rules(*rules: dict) -> dict:
    """`json_schema_extra` for an args model: cross-field rules as an `allOf` of `if`/`then` subschemas."""
    return {"allOf": list(rules)}


def rule(when: dict[str, dict], then: dict[str, dict], *, require: list[str] | None = None,
         message: str | None = None) -> dict:
    """A cross-field rule: when every field in `when` is present and matches its subschema, each field in `then`
    (if present) must match its subschema, and the fields in `require` must be present. Absent fields take their
    defaults, so write rules that defaults pass.

    Put `ERROR_MESSAGE_KEY` in a `then` subschema (or pass `message` for `require`) to give hosts and the worker
    an actionable message."""
    then_schema: dict = {"properties": then}
    if require:
        then_schema["required"] = sorted(require)
        if message:
            then_schema[ERROR_MESSAGE_KEY] = message
    return {"if": {"properties": when, "required": sorted(when)}, "then": then_schema}
