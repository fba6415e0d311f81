"""`${steps.ID.result.PATH}` references: find them in step args, and resolve them against results.

A reference is a string that is *exactly* one reference; it is replaced by the JSON value found at PATH
(any type). PATH is dotted; a segment made of digits indexes a list, and a `*` segment maps the rest of the
path over a list, giving a list. `${steps.ID.result}` is the whole result. A string that merely contains
`${steps.` is an error (no string interpolation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

STEP_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
REF_RE = re.compile(r"^\$\{steps\.(" + STEP_ID_PATTERN + r")\.result((?:\.[^.${}]+)*)\}$")
REF_MARKER = "${steps."
#: A path segment that maps the rest of the path over a list: `${steps.clips.result.*.path}`.
WILDCARD = "*"


@dataclass(frozen=True)
class Reference:
    step: str
    path: tuple[str | int, ...]
    text: str

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path)


class RefError(ValueError):
    """A reference that cannot be resolved (unknown path, wrong container type)."""


def parse(text: str) -> Reference | None:
    match = REF_RE.match(text)
    if not match:
        return None
    segments = [s for s in match.group(2).split(".") if s]
    path = tuple(int(s) if s.isdigit() else s for s in segments)
    return Reference(step=match.group(1), path=path, text=text)


def json_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{base}.{key}"
    return f"{base}[{key!r}]"


def walk_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(json path, string) for every string inside a JSON value (dict keys excluded)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            stack.extend((v, json_path(where, str(k))) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((v, json_path(where, i)) for i, v in reversed(list(enumerate(item))))


def find(value: Any, path: str) -> tuple[list[tuple[str, Reference]], list[tuple[str, str]]]:
    """References in `value`, and strings that look like a reference but are not a valid whole one."""
    refs: list[tuple[str, Reference]] = []
    bad: list[tuple[str, str]] = []
    for where, text in walk_strings(value, path):
        if REF_MARKER not in text:
            continue
        ref = parse(text)
        if ref is None:
            bad.append((where, text))
        else:
            refs.append((where, ref))
    return refs, bad


def lookup(result: Any, ref: Reference) -> Any:
    """The value at `ref.path` in `result` (a copy). A `*` segment maps the rest of the path over a list."""
    return copy_json(_descend(result, ref, 0, ()))


def _descend(value: Any, ref: Reference, start: int, seen: tuple[str | int, ...]) -> Any:
    for i in range(start, len(ref.path)):
        seg = ref.path[i]
        here = ".".join(str(p) for p in (*seen, *ref.path[start:i + 1]))
        if seg == WILDCARD:
            if not isinstance(value, list):
                raise RefError(f"{ref.text}: '*' needs a list at '{here}', got {type(value).__name__}")
            prefix = (*seen, *ref.path[start:i])
            # recursion depth is bounded by the number of `*` segments in the path, not by the data
            return [_descend(v, ref, i + 1, (*prefix, n)) for n, v in enumerate(value)]
        if isinstance(value, dict):
            if str(seg) not in value:
                raise RefError(f"{ref.text}: result of step '{ref.step}' has no field '{here}'")
            value = value[str(seg)]
        elif isinstance(value, list):
            if not isinstance(seg, int):
                raise RefError(f"{ref.text}: '{here}' indexes a list with a non-integer '{seg}'")
            if seg >= len(value):
                raise RefError(f"{ref.text}: index {seg} is out of range (list of {len(value)}) at '{here}'")
            value = value[seg]
        else:
            raise RefError(f"{ref.text}: cannot descend into {type(value).__name__} at '{here}'")
    return value


def map_strings(value: Any, convert: Callable[[str], Any]) -> Any:
    """A copy of a JSON value with every string `s` (dict keys excluded) replaced by `convert(s)`.

    Iterative, so no nesting depth can raise RecursionError (a manifest or a result may be deeply nested).
    """

    def start(item: Any) -> tuple[Any, Any]:  # (the new item, the container still to copy into it, or None)
        if isinstance(item, str):
            return convert(item), None
        if isinstance(item, dict):
            return {}, item
        if isinstance(item, list):
            return [], item
        return item, None

    top, source = start(value)
    pending = [(top, source)] if source is not None else []
    while pending:
        target, source = pending.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in pairs:
            new, child_source = start(child)
            if isinstance(target, dict):
                target[key] = new
            else:
                target.append(new)
            if child_source is not None:
                pending.append((new, child_source))
    return top


def copy_json(value: Any) -> Any:
    return map_strings(value, lambda text: text)


def resolve(value: Any, results: dict[str, Any]) -> Any:
    """A copy of `value` with every reference replaced by its value. Raises RefError."""

    def replace(text: str) -> Any:
        ref = parse(text) if REF_MARKER in text else None
        if ref is None:
            return text
        if ref.step not in results:
            raise RefError(f"{ref.text}: step '{ref.step}' has no committed result")
        return lookup(results[ref.step], ref)

    return map_strings(value, replace)
