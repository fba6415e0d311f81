"""Foreach fan-out: a step with `foreach: ${steps.ID.result.PATH}` runs once per item of that list.

In its args, a string that is exactly `${item}` or `${item.PATH}` becomes that item (or the value at PATH in
it), and `${index}` its position. Like step references, these are whole strings, never interpolated.

Zipped: `foreach: {"scene": "${steps.S.result.script}", "keyframe": "${steps.K.result}"}` runs over several
lists of one length at once; item i is `{"scene": <i-th scene>, "keyframe": <i-th keyframe>}`.

Streaming: a foreach step whose list (or, zipped, exactly one of whose lists) is `${steps.A.result}` where A is
itself a foreach step follows A item by item: its item i waits for A's item i only (A's result is the list of
its item results), unless its args or another of its lists also reference A. The other lists of a zipped
step come from steps it waits for as a whole.
"""

from __future__ import annotations

import re
from typing import Any

from . import refs

ITEM_RE = re.compile(r"^\$\{item((?:\.[^.${}]+)*)\}$")
INDEX_TEXT = "${index}"
ITEM_MARKER = "${item"
#: The name `list_refs` gives the one list of a plain (not zipped) foreach.
SINGLE = ""
ForeachSpec = str | dict[str, str] | None


def parse_item(text: str) -> refs.Reference | None:
    match = ITEM_RE.match(text)
    if not match:
        return None
    segments = [s for s in match.group(1).split(".") if s]
    return refs.Reference(step="item", path=tuple(int(s) if s.isdigit() else s for s in segments), text=text)


def item_problems(args: Any, base: str, foreach: Any) -> list[tuple[str, str, str]]:
    """(json path, message, type) for `${item…}`/`${index}` misuse in a step's args (`foreach`: the step's)."""
    problems = []
    names = set(foreach) if isinstance(foreach, dict) else None
    for where, text in refs.walk_strings(args, base):
        if ITEM_MARKER not in text and INDEX_TEXT not in text:
            continue
        item = parse_item(text)
        if text != INDEX_TEXT and item is None:
            problems.append((where, f"{text[:120]!r}: `${{item…}}` and `${{index}}` must be the whole string "
                             "(no interpolation)", "bad_reference"))
        elif not foreach:
            problems.append((where, f"{text!r} is only meaningful in a step with `foreach`", "item_outside_foreach"))
        elif names is not None and item is not None and item.path and str(item.path[0]) not in names:
            problems.append((where, f"{text!r}: the zipped items have {', '.join(sorted(names))}, not "
                             f"'{item.path[0]}'", "unknown_item_field"))
    return problems


def list_refs(foreach: ForeachSpec) -> dict[str, refs.Reference]:
    """Name -> reference of each list a foreach runs over (a plain foreach's one list is named SINGLE)."""
    texts = {} if foreach is None else {SINGLE: foreach} if isinstance(foreach, str) else foreach
    return {name: ref for name, text in texts.items() if (ref := refs.parse(text)) is not None}


def resolve_lists(foreach: ForeachSpec, results: dict[str, Any], skip: str | None = None) -> dict[str, list[Any]]:
    """Each list of a foreach but `skip` (a streamed one, not known yet), resolved. Raises RefError."""
    lists = {}
    for name, ref in list_refs(foreach).items():
        if name == skip:
            continue
        if ref.step not in results:
            raise refs.RefError(f"{ref.text}: step '{ref.step}' has no committed result")
        value = refs.lookup(results[ref.step], ref)
        if not isinstance(value, list):
            raise refs.RefError(f"{ref.text}: foreach needs a list, got {type(value).__name__}")
        lists[name] = value
    return lists


def common_length(lengths: dict[str, int]) -> int:
    """The one length of a foreach's lists; RefError giving each list's length when they differ."""
    if len(set(lengths.values())) > 1:
        each = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise refs.RefError(f"the zipped foreach lists differ in length: {each}")
    return next(iter(lengths.values()), 0)


def item_at(foreach: ForeachSpec, lists: dict[str, list[Any]], index: int, streamed: tuple[str, Any] | None = None
            ) -> Any:
    """What `${item}` stands for in item `index`: the element of a plain foreach's list, or a zipped step's object
    of each list's element (`streamed`: the name of a streamed list and its element, taken from upstream)."""
    values = {name: lst[index] for name, lst in lists.items()}
    if streamed is not None:
        values[streamed[0]] = streamed[1]
    return values[SINGLE] if not isinstance(foreach, dict) else {name: values[name] for name in foreach}


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


def stream_source(foreach: ForeachSpec, steps_with_foreach: set[str], args: dict[str, Any]) -> str | None:
    """The foreach step this one streams from (see the module doc), or None."""
    name = streamed_name(foreach, steps_with_foreach)
    if name is None:
        return None
    lists = list_refs(foreach)
    source = lists[name].step
    found, _ = refs.find(args, "$")
    if any(r.step == source for _, r in found) or sum(r.step == source for r in lists.values()) > 1:
        return None  # the args, or another list, need A's whole list: wait for all of A
    return source


def streamed_name(foreach: ForeachSpec, steps_with_foreach: set[str]) -> str | None:
    """The one list that is exactly `${steps.A.result}` of a foreach step A (its name), or None."""
    whole = [name for name, ref in list_refs(foreach).items() if not ref.path and ref.step in steps_with_foreach]
    return whole[0] if len(whole) == 1 else None
