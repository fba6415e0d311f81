"""Manifest `params`: named defaults, `--param NAME=VALUE` overrides typed by their default, and `${params.NAME}`
substituted into steps' `args`, `foreach` and `gate` and into `workers` argv.

Params are resolved on the raw document, before it is checked or any key is computed: a run sees the resolved
values only, so a changed param re-runs exactly the steps whose resolved args change. A string that is exactly
`${params.NAME}` becomes the value (any JSON type); inside a longer string the value is interpolated, which is
allowed for strings and numbers only. A substituted value is never scanned again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import refs
from .manifest_checks import Problem

PARAM_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
PARAM_RE = re.compile(r"\$\{params\.([^{}]*)\}")
PARAM_MARKER = "${params."

#: JSON type names of parsed values (bool before int: a bool is an int in Python).
_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object"),
    (type(None), "null"))


def json_type(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def split_assignment(text: str) -> tuple[str, str]:
    """`NAME=VALUE` -> (NAME, VALUE); ValueError when there is no `=` or no name."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"{text!r} is not NAME=VALUE")
    return name, value


def typed_value(text: str, default: Any) -> Any:
    """`text` read as the default's JSON type (a string default takes the text as it is, like a worker's
    `-i key=value`); a null default takes any JSON value. ValueError saying what was expected otherwise."""
    expected = json_type(default)
    if expected == "string":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a JSON {expected}") from None
    got = json_type(value)
    if got == "number" and expected == "integer" and value.is_integer():
        return int(value)
    if expected == "null" or got == expected or (expected == "number" and got == "integer"):
        return value
    raise ValueError(f"{text!r} is {got}, expected {expected} (the type of the default)")


def effective(defaults: dict[str, Any], overrides: list[tuple[str, str]]) -> tuple[dict[str, Any], list[Problem]]:
    """The params after `--param` overrides, and a problem per unknown name or ill-typed value."""
    values = dict(defaults)
    problems = []
    for name, text in overrides:
        if name not in defaults:
            known = ", ".join(sorted(defaults)) or "none declared"
            problems.append(Problem("$.params", f"--param {name}: no such param (params: {known})", "unknown_param"))
            continue
        try:
            values[name] = typed_value(text, defaults[name])
        except ValueError as exc:
            problems.append(Problem(refs.json_path("$.params", name), f"--param {name}: {exc}", "param_type"))
    return values, problems


def _text_problems(text: str, params: dict[str, Any]) -> list[str]:
    whole = PARAM_RE.fullmatch(text)
    problems = []
    for match in PARAM_RE.finditer(text):
        name = match.group(1)
        if name not in params:
            problems.append(f"{match.group(0)}: unknown param '{name}' (params: {', '.join(sorted(params)) or 'none'})")
        elif not whole and json_type(params[name]) not in ("string", "integer", "number"):
            problems.append(f"{match.group(0)} is a {json_type(params[name])}: only strings and numbers can be "
                            "interpolated into a longer string")
    if text.count(PARAM_MARKER) > len(PARAM_RE.findall(text)):
        problems.append(f"{text[:120]!r}: an unclosed `${{params.`")
    return problems


def _interpolated(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _substitute_text(text: str, params: dict[str, Any]) -> Any:
    if PARAM_MARKER not in text:
        return text
    whole = PARAM_RE.fullmatch(text)
    if whole and whole.group(1) in params:
        return refs.copy_json(params[whole.group(1)])
    return PARAM_RE.sub(lambda m: _interpolated(params[m.group(1)]) if m.group(1) in params else m.group(0), text)


def substitute(value: Any, params: dict[str, Any], where: str) -> tuple[Any, list[Problem]]:
    """`value` with every `${params.NAME}` replaced, and a problem (at its JSON path) per misuse."""
    problems = [Problem(path, message, "bad_param")
                for path, text in refs.walk_strings(value, where) if PARAM_MARKER in text
                for message in _text_problems(text, params)]
    return refs.map_strings(value, lambda text: _substitute_text(text, params)), problems


def resolve_document(doc: Any, overrides: list[tuple[str, str]]) -> tuple[Any, dict[str, Any], list[Problem]]:
    """(the document with params substituted, the effective params, problems). A document not shaped like a
    manifest comes back as it is (the schema check reports it)."""
    declared = doc.get("params") if isinstance(doc, dict) else None
    defaults = declared if isinstance(declared, dict) else {}
    values, problems = effective(defaults, overrides)
    if not isinstance(doc, dict):
        return doc, values, problems
    doc = dict(doc)
    if isinstance(doc.get("workers"), dict):
        doc["workers"], found = substitute(doc["workers"], values, "$.workers")
        problems += found
    if isinstance(doc.get("steps"), list):
        steps = []
        for i, step in enumerate(doc["steps"]):
            if isinstance(step, dict):
                step = dict(step)
                for key in ("args", "foreach", "gate"):  # a gate: e.g. fewer regenerations on tiny models
                    if key in step:
                        step[key], found = substitute(step[key], values, f"$.steps[{i}].{key}")
                        problems += found
            steps.append(step)
        doc["steps"] = steps
    return doc, values, problems
