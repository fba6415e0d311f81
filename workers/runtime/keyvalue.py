"""`-i key=value`: an args document from the command line, each value read by the type its schema gives the key.

The schema decides, never the text: `model=1` is the string "1" because `model` is a string, and `steps=1.5`
is an error because `steps` is an integer. A key whose only non-null type is `string` takes the text as it is;
every other key takes a JSON value of one of its types (`20`, `0.5`, `true`, `["srt","vtt"]`, `{"width": 64}`),
and a nullable non-string key also takes `null`. To leave a nullable string unset, leave the key out.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import orjson

from .errors import FieldErrors
from .validation import json_path

#: JSON Schema type names of parsed JSON values (bool before int: a bool is an int in Python).
_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object"),
    (type(None), "null"))


def json_type(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def resolve_ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    return node


def field_types(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    """The JSON types a property accepts, following `$ref` and `anyOf`/`oneOf`; empty when the schema says none."""
    node = resolve_ref(schema, node)
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return set(declared)
    found: set[str] = set()
    for branch in (*node.get("anyOf", ()), *node.get("oneOf", ())):
        found |= field_types(schema, branch)
    if "properties" in node:
        found.add("object")
    for value in node.get("enum", ()) if not found else ():
        found.add(json_type(value))
    if "const" in node and not found:
        found.add(json_type(node["const"]))
    return found


def _accepts(value: Any, types: set[str]) -> bool:
    kind = json_type(value)
    if kind == "number" and value.is_integer():  # JSON Schema: 5.0 is an integer (an args file may say so too)
        kind = "integer"
    return kind in types or (kind == "integer" and "number" in types)


def parse_value(text: str, types: set[str]) -> Any:
    """The value `text` stands for under `types`; ValueError saying what was expected otherwise."""
    if types - {"null"} == {"string"}:
        return text
    expected = " or ".join(sorted(types)) if types else "any JSON value"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        hint = (" (write it as JSON, e.g. '[\"a\", \"b\"]' or '{\"key\": 1}')" if types & {"array", "object"}
                else " (quote a string as JSON: '\"text\"')" if "string" in types else "")
        raise ValueError(f"{text!r} is not a JSON {expected}{hint}") from None
    if types and not _accepts(value, types):
        raise ValueError(f"{text!r} is {json_type(value)}, expected {expected}")
    return value


def parse_assignments(schema: dict[str, Any], assignments: Iterable[str]) -> tuple[dict[str, Any], FieldErrors]:
    """`["key=value", ...]` -> (the args document, the problems: malformed, unknown, repeated keys, bad values)."""
    properties: dict[str, Any] = schema.get("properties", {})
    document: dict[str, Any] = {}
    seen: set[str] = set()
    problems = FieldErrors()
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.add("$", f"-i expects key=value, got {item!r}", "usage")
            continue
        path = json_path([key])
        if key not in properties:
            near = difflib.get_close_matches(key, properties, n=1)
            problems.add(path, "unknown field (not in the schema)" + (f"; did you mean '{near[0]}'?" if near else ""),
                         "extra_forbidden")
        elif key in seen:
            problems.add(path, f"given more than once (-i {key}=...); give it once", "duplicate")
        else:
            seen.add(key)
            try:
                document[key] = parse_value(text, field_types(schema, properties[key]))
            except ValueError as exc:
                problems.add(path, str(exc), "cli_value")
    return document, problems
