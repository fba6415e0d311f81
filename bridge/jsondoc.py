"""Strict JSON for manifests and worker answers.

Python's json module accepts things that later break a run far from their cause: a key given twice (the last
one silently wins), NaN/Infinity, numbers that overflow to infinity, a lone surrogate such as "\\ud800" (which
no UTF-8 encoder can write) and nesting deep enough for a RecursionError in any recursive consumer. These are
found here, each with a JSON path, in one iterative pass.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .refs import json_path

#: Deepest container nesting accepted in a manifest or a worker answer (the document itself is level 1).
MAX_NESTING = 100
#: Problems reported per document at most (a generated document can repeat one mistake thousands of times).
MAX_PROBLEMS = 50


@dataclass(frozen=True)
class ShapeProblem:
    path: str
    message: str
    type: str  # too_deep | duplicate_key | lone_surrogate | json


class _Object(dict):
    """A parsed JSON object that remembers the keys it saw more than once."""

    __slots__ = ("duplicates",)


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        obj.duplicates = [key for key, n in counts.items() if n > 1]
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(text: str) -> Any:
    """json.loads that rejects NaN/Infinity and records duplicate keys (reported by `shape_problems`).

    Raises ValueError (not JSON) or RecursionError (nested beyond what the parser can handle).
    """
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_from_pairs)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_at(text: str) -> str:
    index = next(i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF)
    return f"\\u{ord(text[index]):04x} at character {index}"


class _Walk:
    """One iterative pass over a JSON value; paths are built only for the nodes that have a problem."""

    def __init__(self, root: str, max_depth: int):
        self.root = root
        self.max_depth = max_depth
        self.problems: list[ShapeProblem] = []

    def path(self, node: tuple | None) -> str:
        keys = []
        while node is not None:
            node, key = node
            keys.append(key)
        where = self.root
        for key in reversed(keys):
            where = json_path(where, key)
        return where

    def report(self, node: tuple | None, message: str, kind: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(ShapeProblem(self.path(node), message, kind))

    def run(self, value: Any) -> list[ShapeProblem]:
        # stack items: (value, depth, node) where node = (parent node, key) links back to the root (None)
        stack: list[tuple[Any, int, tuple | None]] = [(value, 1, None)]
        while stack and len(self.problems) < MAX_PROBLEMS:
            item, depth, node = stack.pop()
            if isinstance(item, str):
                if not _encodable(item):
                    self.report(node, f"holds a lone surrogate ({_surrogate_at(item)}); it cannot be written as "
                                "UTF-8", "lone_surrogate")
            elif isinstance(item, float):
                if not math.isfinite(item):
                    self.report(node, "NaN/Infinity (or a number too large for a double) is not JSON", "json")
            elif isinstance(item, (dict, list)):
                if depth > self.max_depth:
                    self.report(node, f"nested deeper than {self.max_depth} levels", "too_deep")
                    continue
                if isinstance(item, dict):
                    self._check_keys(item, node)
                    children = item.items()
                else:
                    children = enumerate(item)
                stack.extend((child, depth + 1, (node, key)) for key, child in reversed(list(children)))
        return self.problems

    def _check_keys(self, obj: dict, node: tuple | None) -> None:
        for key in getattr(obj, "duplicates", ()):
            self.report((node, key), f"key {key!r} appears more than once (only one value would be used)",
                        "duplicate_key")
        for key in obj:
            if isinstance(key, str) and not _encodable(key):
                self.report(node, f"key {key!r} holds a lone surrogate ({_surrogate_at(key)})", "lone_surrogate")


def shape_problems(value: Any, root: str = "$", max_depth: int = MAX_NESTING) -> list[ShapeProblem]:
    """Nesting beyond `max_depth`, duplicate keys, lone surrogates (in keys and strings), non-finite numbers."""
    return _Walk(root, max_depth).run(value)
