"""The committed JSON schemas, read as files (the bridge never imports the contract models at run time)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from .refs import WILDCARD

#: Overrides where the committed schemas are read from (default: the repository's `schemas/`).
SCHEMA_DIR_ENV = "STORYBRIDGE_SCHEMA_DIR"
DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


class SchemaMissing(RuntimeError):
    pass


def schema_dir() -> Path:
    raw = os.environ.get(SCHEMA_DIR_ENV)
    return Path(raw) if raw else DEFAULT_SCHEMA_DIR


class SchemaStore:
    """Validators for the envelope and, where a `<worker>.result.schema.json` exists, a worker's result."""

    def __init__(self, directory: Path | None = None):
        self.dir = directory or schema_dir()
        self._results: dict[str, Draft202012Validator | None] = {}
        self._raw_results: dict[str, dict | None] = {}
        self._envelope: Draft202012Validator | None = None

    def envelope(self) -> Draft202012Validator:
        if self._envelope is None:
            path = self.dir / "envelope.schema.json"
            if not path.is_file():
                raise SchemaMissing(f"{path} not found: run `python -m bridge schema --write` "
                                    f"(or point {SCHEMA_DIR_ENV} at the committed schemas)")
            self._envelope = Draft202012Validator(json.loads(path.read_text("utf-8")))
        return self._envelope

    def result_schema(self, worker: str) -> dict | None:
        if worker not in self._raw_results:
            path = self.dir / f"{worker}.result.schema.json"
            try:
                self._raw_results[worker] = json.loads(path.read_text("utf-8")) if path.is_file() else None
            except (OSError, ValueError):
                self._raw_results[worker] = None
        return self._raw_results[worker]

    def result(self, worker: str) -> Draft202012Validator | None:
        if worker not in self._results:
            schema = self.result_schema(worker)
            self._results[worker] = Draft202012Validator(schema) if schema is not None else None
        return self._results[worker]


def error_lines(validator: Draft202012Validator, document: Any, limit: int = 5) -> list[str]:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    lines = [f"{e.json_path}: {e.message[:200]}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"(and {len(errors) - limit} more)")
    return lines


def path_in_schema(schema: dict, path: tuple[str | int, ...]) -> str | None:
    """Best-effort static check that `path` can exist in documents of `schema`.

    Returns None when the path may exist (or the schema is too loose to tell), else why it cannot.
    """
    defs = schema.get("$defs", {})

    def deref(node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 32:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
                return {}
            node = defs.get(ref.split("/")[-1], {})
            seen += 1
        return node if isinstance(node, dict) else {}

    def check(node: Any, rest: tuple[str | int, ...], where: str) -> str | None:
        node = deref(node)
        if not rest:
            return None
        branches = [b for key in ("anyOf", "oneOf", "allOf") for b in node.get(key, [])]
        if branches:
            problems = [check(b, rest, where) for b in branches]
            if any(p is None for p in problems):
                return None
            return problems[0]
        seg, tail = rest[0], rest[1:]
        here = f"{where}.{seg}" if where else str(seg)
        kind = node.get("type")
        is_array = "array" in (kind if isinstance(kind, list) else [kind]) or "items" in node or "prefixItems" in node
        if seg == WILDCARD:  # maps the rest over every item: an array is needed here
            if is_array:
                items = node.get("items")
                return check(items if isinstance(items, dict) else {}, tail, here)
            if kind is not None or "properties" in node:
                return f"'{where or 'result'}' is {kind or 'object'}, not an array: '*' needs an array there"
            return None
        if isinstance(seg, int) and is_array:
            prefix = node.get("prefixItems")
            if isinstance(prefix, list) and seg < len(prefix):
                return check(prefix[seg], tail, here)
            items = node.get("items")
            if items is False:
                return f"no item {seg} at '{here}'"
            return check(items if isinstance(items, dict) else {}, tail, here)
        props = node.get("properties")
        if kind == "object" or isinstance(props, dict):
            props = props if isinstance(props, dict) else {}
            if str(seg) in props:
                return check(props[str(seg)], tail, here)
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                return check(extra, tail, here)
            if extra is True or (not props and extra is None):
                return None
            known = ", ".join(sorted(props)) or "none"
            return f"no field '{here}' (known fields: {known})"
        if kind in ("string", "number", "integer", "boolean", "null"):
            return f"'{where or 'result'}' is a {kind}, it has no '{seg}'"
        return None

    return check(schema, path, "")
