"""Foreach fan-out: a step with `foreach: ${steps.ID.result.PATH}` runs once per item of that list.

In its args, a string that is exactly `${item}` or `${item.PATH}` becomes that item (or the value at PATH in
it), and `${index}` its position. Like step references, these are whole strings, never interpolated.

Streaming: a foreach step whose list is `${steps.A.result}` where A is itself a foreach step follows A item
by item: its item i waits for A's item i only (A's result is the list of its item results), unless its args
also reference A as a whole.
"""

from __future__ import annotations

import re
from typing import Any

from . import refs

ITEM_RE = re.compile(r"^\$\{item((?:\.[^.${}]+)*)\}$")
INDEX_TEXT = "${index}"
ITEM_MARKER = "${item"


def parse_item(text: str) -> refs.Reference | None:
    match = ITEM_RE.match(text)
    if not match:
        return None
    segments = [s for s in match.group(1).split(".") if s]
    return refs.Reference(step="item", path=tuple(int(s) if s.isdigit() else s for s in segments), text=text)


def item_problems(args: Any, base: str, is_foreach: bool) -> list[tuple[str, str, str]]:
    """(json path, message, type) for `${item…}`/`${index}` misuse in a step's args."""
    problems = []
    for where, text in refs.walk_strings(args, base):
        if ITEM_MARKER not in text and INDEX_TEXT not in text:
            continue
        whole = text == INDEX_TEXT or parse_item(text) is not None
        if not whole:
            problems.append((where, f"{text[:120]!r}: `${{item…}}` and `${{index}}` must be the whole string "
                             "(no interpolation)", "bad_reference"))
        elif not is_foreach:
            problems.append((where, f"{text!r} is only meaningful in a step with `foreach`", "item_outside_foreach"))
    return problems


def resolve_args(args: dict[str, Any], results: dict[str, Any], item: Any = None,
                 index: int | None = None) -> dict[str, Any]:
    """Step references, and (for an item) `${item…}` and `${index}`, replaced in one pass: a value that was
    substituted is never scanned again (an upstream result holding `${item}` stays as it is)."""

    def replace(text: str) -> Any:
        if refs.REF_MARKER in text:
            ref = refs.parse(text)
            if ref is None:
                return text
            if ref.step not in results:
                raise refs.RefError(f"{ref.text}: step '{ref.step}' has no committed result")
            return refs.lookup(results[ref.step], ref)
        if index is not None:
            if text == INDEX_TEXT:
                return index
            found = parse_item(text) if text.startswith(ITEM_MARKER) else None
            if found is not None:
                return refs.lookup(item, found)
        return text

    return refs.map_strings(args, replace)


def stream_source(foreach: str | None, steps_with_foreach: set[str], args: dict[str, Any]) -> str | None:
    """The foreach step this one streams from (see the module doc), or None."""
    ref = refs.parse(foreach) if foreach else None
    if ref is None or ref.path or ref.step not in steps_with_foreach:
        return None
    found, _ = refs.find(args, "$")
    if any(r.step == ref.step for _, r in found):
        return None  # the args need A's whole list: wait for all of A
    return ref.step
