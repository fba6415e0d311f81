"""Args validation: the published JSON Schema gives the verdict, the strict pydantic model gives the types.

One verdict for host and worker: the args document is checked against the same schema that is committed in
`schemas/<worker>.args.schema.json` (generated from the worker's model), with `jsonschema`, exactly as a host
would; every error is reported at once, each with a JSON path. The strict model then builds the typed args;
a rule only the model knows (which the contract tests forbid) still surfaces as a field error, never as a
coerced value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from workers.contract import ERROR_MESSAGE_KEY

from .errors import InvalidInput, joined

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(loc: Iterable[Any]) -> str:
    """A location (keys and indexes) -> JSON path: `$.segments[0].text`, `$['odd key']`."""
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(str(part)):
            path += f".{part}"
        else:
            path += "[" + repr(str(part)) + "]"
    return path


def field_error(path: str, message: str, type_: str) -> dict[str, str]:
    return {"path": path, "message": message, "type": type_}


def pydantic_field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [field_error(json_path(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]


# --- the schema's verdict ---------------------------------------------------------------------------------

@cache
def args_validator(model: type[BaseModel]):
    """A Draft 2020-12 validator for the model's args schema (the document committed in `schemas/`)."""
    from jsonschema import Draft202012Validator  # ~50 ms; only on the validation path

    return Draft202012Validator(model.model_json_schema(mode="validation"))


def _message(error) -> str:
    """The error's message, or the schema's own `x-error-message` where the failing subschema has one."""
    custom = error.schema.get(ERROR_MESSAGE_KEY) if isinstance(error.schema, dict) else None
    if error.validator == "multipleOf" and isinstance(error.instance, (int, float)):
        return _nearest_multiples(error.instance, error.validator_value)
    return f"{error.instance!r}: {custom}" if custom else error.message


def _nearest_multiples(value: float, step: float) -> str:
    below = int(value // step * step)
    return f"{value!r} is not a multiple of {step!r}; the nearest valid values are {below} and {below + int(step)}"


def _expand(error, custom: str | None = None) -> Iterator[dict[str, str]]:
    """One jsonschema error -> field errors that point at the offending field itself."""
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        message = error.schema.get(ERROR_MESSAGE_KEY) or "required field is missing"
        for name in error.validator_value:
            if name not in error.instance:
                yield field_error(json_path([*path, name]), message, "missing")
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        for name in error.instance:
            if name not in known:
                yield field_error(json_path([*path, name]), "unknown field (not in the schema)", "extra_forbidden")
        return
    if error.validator in ("anyOf", "oneOf") and error.context:
        yield from _expand_branches(error, path)
        return
    message = f"{error.instance!r}: {custom}" if custom and error.validator != "multipleOf" else _message(error)
    yield field_error(json_path(path), message, str(error.validator))


def _expand_branches(error, path: list) -> Iterator[dict[str, str]]:
    """anyOf/oneOf: the branch whose type matched says what is wrong (every error in it); if no branch's type
    matched, one error listing the types."""
    from jsonschema.exceptions import best_match

    matched = [e for e in error.context if e.validator != "type" or e.relative_path]
    if not matched:
        types = " or ".join(repr(e.validator_value) for e in error.context if e.validator == "type")
        yield field_error(json_path(path), f"{error.instance!r} is not of type {types}", "type")
        return
    branch = best_match(matched).relative_schema_path[0]
    for inner in matched:
        if inner.relative_schema_path[0] == branch:
            yield from _expand(inner, _custom_message(inner, stop=error))


def _custom_message(error, stop) -> str | None:
    """The nearest `x-error-message` from the failing subschema up to (and including) `stop`'s."""
    current = error
    while current is not None:
        custom = current.schema.get(ERROR_MESSAGE_KEY) if isinstance(current.schema, dict) else None
        if custom:
            return custom
        if current is stop:
            return None
        current = current.parent
    return None


def schema_field_errors(model: type[BaseModel], document: Any) -> list[dict[str, str]]:
    """Every way `document` breaks the model's JSON Schema, in document order."""
    # One error per field: a wrong type first (an enum or range error on a value of the wrong type says less).
    errors = sorted(args_validator(model).iter_errors(document),
                    key=lambda e: ([str(p) for p in e.absolute_path], e.validator != "type"))
    unique: dict[str, dict[str, str]] = {}
    for error in errors:
        for item in _expand(error):
            unique.setdefault(item["path"], item)
    return list(unique.values())


# --- the typed model ----------------------------------------------------------------------------------------

def integral_floats_as_ints(value: Any) -> Any:
    """JSON has one number type: `5.0` is the integer 5 (as JSON Schema says). The strict model needs an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats_as_ints(v) for v in value]
    return value


#: Args deeper than this are refused before validation (no real args come close; it keeps every step bounded).
MAX_ARGS_DEPTH = 64


def nesting_depth(document: Any, limit: int) -> int:
    """How deeply arrays and objects nest (a scalar is 0), counted without recursion; stops past `limit`."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def validate_document(model: type[BaseModel], document: Any, worker_name: str) -> Any:
    """The typed args, or InvalidInput listing every bad field (schema errors and model checks together)."""
    if not isinstance(document, dict):
        raise InvalidInput(f"args must be a JSON object, got {_json_type(document)}",
                           details={"field_errors": [field_error("$", "not an object", "type")]})
    if nesting_depth(document, MAX_ARGS_DEPTH) > MAX_ARGS_DEPTH:
        message = f"args nest deeper than {MAX_ARGS_DEPTH} levels of arrays and objects"
        raise InvalidInput(message, details={"field_errors": [field_error("$", message, "depth")]})
    errors = schema_field_errors(model, document)
    if errors:  # the host's verdict, with the host's paths
        raise invalid_args(worker_name, errors)
    try:
        return model.model_validate(integral_floats_as_ints(document))
    except ValidationError as exc:  # a rule only the model knows: still a field error (the contract tests forbid it)
        raise invalid_args(worker_name, pydantic_field_errors(exc)) from None


def invalid_args(worker_name: str, errors: list[dict[str, str]], what: str = "invalid args") -> InvalidInput:
    summary = joined([f"{e['path']}: {e['message']}" for e in errors])
    return InvalidInput(f"{what} for worker '{worker_name}': {summary}", details={"field_errors": errors})


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)
