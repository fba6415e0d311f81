"""`--help` for people, rendered from the args schema the host reads, so the two cannot drift.

Every field gets a line with its type, whether it is required or its default, its bounds and choices, then its
description; fields of nested objects (a `$ref`, or array items that are objects) follow, indented.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from workers.contract import ERROR_MESSAGE_KEY

from .keyvalue import field_types, resolve_ref

_INDENT = "  "
#: Nested objects are shown this many levels deep (the contract's args nest two at most).
_MAX_DEPTH = 3


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _type_name(schema: dict[str, Any], node: dict[str, Any]) -> str:
    types = field_types(schema, node)
    names = sorted(types - {"null"})
    if "array" in types:
        items = _item_node(schema, node)
        inner = _type_name(schema, items) if items else "any"
        names = [f"array of {inner}" if n == "array" else n for n in names]
    text = " | ".join(names) or "any"
    return f"{text} | null" if "null" in types else text


def _branches(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The node's own constraints and those of its non-null anyOf/oneOf branches."""
    node = resolve_ref(schema, node)
    found = [node]
    for branch in (*node.get("anyOf", ()), *node.get("oneOf", ())):
        if resolve_ref(schema, branch).get("type") != "null":
            found.extend(_branches(schema, branch))
    return found


def _item_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    return next((b["items"] for b in _branches(schema, node) if isinstance(b.get("items"), dict)), None)


def _bounds(node: dict[str, Any]) -> list[str]:
    low = (f"{node['minimum']} <= " if "minimum" in node else
           f"{node['exclusiveMinimum']} < " if "exclusiveMinimum" in node else "")
    high = (f" <= {node['maximum']}" if "maximum" in node else
            f" < {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else "")
    parts = [f"{low}value{high}"] if low or high else []
    if "multipleOf" in node:
        parts.append(f"multiple of {node['multipleOf']}")
    for lo, hi, unit in (("minLength", "maxLength", "characters"), ("minItems", "maxItems", "items")):
        if lo in node and hi in node:
            parts.append(f"{node[lo]} to {node[hi]} {unit}")
        elif lo in node or hi in node:
            parts.append(f"at least {node[lo]} {unit}" if lo in node else f"at most {node[hi]} {unit}")
    if node.get("uniqueItems"):
        parts.append("no repeats")
    return parts


def constraints(schema: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """Bounds, choices and format rules of a field, as short phrases."""
    parts: list[str] = []
    for branch in _branches(schema, node):
        parts += _bounds(branch)
        if "enum" in branch:
            parts.append("choices: " + ", ".join(str(v) for v in branch["enum"]))
        if ERROR_MESSAGE_KEY in branch:
            parts.append(str(branch[ERROR_MESSAGE_KEY]))
        items = branch.get("items")
        if isinstance(items, dict) and "properties" not in resolve_ref(schema, items):
            parts += [f"each {p}" for p in constraints(schema, items)]
    return list(dict.fromkeys(parts))


def _nested_objects(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    objects = []
    for branch in _branches(schema, node):
        if "properties" in branch and branch is not node:
            objects.append(branch)
        items = branch.get("items")
        if isinstance(items, dict):
            objects += [b for b in _branches(schema, items) if "properties" in b]
    return objects


def field_lines(schema: dict[str, Any], name: str, node: dict[str, Any], required: bool, depth: int = 0,
                width: int = 100) -> list[str]:
    pad = _INDENT * (depth + 1)
    status = "required" if required else (f"default {_short(node['default'])}" if "default" in node else "optional")
    lines = [f"{pad}{name}  ({_type_name(schema, node)}; {status})"]
    found = constraints(schema, node)
    body = ["; ".join(found)] if found else []
    if node.get("description"):
        body.append(" ".join(node["description"].split()))
    for text in body:
        lines += textwrap.wrap(text, width=width, initial_indent=pad + _INDENT * 2,
                               subsequent_indent=pad + _INDENT * 3)
    if depth + 1 < _MAX_DEPTH:
        for obj in _nested_objects(schema, node):
            lines += object_lines(schema, obj, depth + 1, width)
    return lines


def object_lines(schema: dict[str, Any], obj: dict[str, Any], depth: int = 0, width: int = 100) -> list[str]:
    required = set(obj.get("required", ()))
    lines: list[str] = []
    for name, node in obj.get("properties", {}).items():
        lines += field_lines(schema, name, node, name in required, depth, width)
    return lines


def rules(schema: dict[str, Any]) -> list[str]:
    """The cross-field rules (`allOf` of `if`/`then`), by the messages the schema gives them."""
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            if ERROR_MESSAGE_KEY in value:
                found.append(str(value[ERROR_MESSAGE_KEY]))
            for child in value.values():
                collect(child)
        elif isinstance(value, list):
            for child in value:
                collect(child)

    collect(schema.get("allOf", []))
    return list(dict.fromkeys(found))


def render_args_help(schema: dict[str, Any], width: int = 100) -> str:
    """The args section of `--help`: every field, then the cross-field rules."""
    out = ["args (each as -i KEY=VALUE; strings as they are, other types as JSON; or all in an --input file):"]
    out += object_lines(schema, schema, 0, width)
    cross = rules(schema)
    if cross:
        out += ["", "rules across fields:"]
        out += [line for rule in cross for line in textwrap.wrap(rule, width=width, initial_indent=_INDENT + "- ",
                                                                 subsequent_indent=_INDENT * 2)]
    return "\n".join(out)
