"""The quality gate of a foreach step: its manifest model, the pure rules (the verdict of a check item, the
varied args of a regeneration) and its static checks. The coordinator's side is in `gate_keeper.py`.

A gate sits on a foreach step C that streams from foreach step X (`regenerates: X`). Item i passes when the
value at the dotted path `pass` in C's item i result is exactly `true`. A failing item has X's item i made
again with the integer at `vary.arg` in its resolved args raised by `vary.add × r` (regeneration r = 1, 2,
... up to `max_regenerations`), and C's item i checks it again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import cachekey, fanout, refs
from .schemas import SchemaStore, path_in_schema

DottedPath = tuple[str | int, ...]
PASSED, EXHAUSTED, UNCHECKED = "passed", "exhausted", "unchecked"


class Vary(BaseModel):
    """What changes in the regenerated item's resolved args."""

    model_config = ConfigDict(extra="forbid")

    arg: str = Field(min_length=1, pattern=r"^[^.]+(\.[^.]+)*$",
                     description="Dotted path of an integer in the regenerated step's args (e.g. `prompts.0.seed`); "
                     "an all-digit segment indexes a list.")
    add: int = Field(default=1, ge=-(2**31), le=2**31, description="Added once per regeneration: value + add × r.")


class Gate(BaseModel):
    """A per-item quality gate: a failing item regenerates the item of `regenerates` it checked."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pass_path: str = Field(alias="pass", min_length=1, pattern=r"^[^.]+(\.[^.]+)*$",
                           description="Dotted path in this step's item result; the item passes when it is exactly "
                           "`true`.")
    score: str | None = Field(default=None, min_length=1, pattern=r"^[^.]+(\.[^.]+)*$",
                              description="Dotted path of a score in the item result, recorded for people.")
    regenerates: str = Field(pattern=r"^" + refs.STEP_ID_PATTERN + r"$", max_length=100,
                             description="The foreach step this one streams from, whose item is made again.")
    max_regenerations: int = Field(default=2, ge=0, le=10, description="Regenerations per item at most.")
    vary: Vary
    on_exhausted: Literal["continue", "fail"] = Field(
        default="continue", description="`continue`: the last candidate stands and the run goes on; `fail`: the "
        "regenerated item fails.")


def dotted(text: str) -> DottedPath:
    return tuple(int(s) if s.isdigit() else s for s in text.split("."))


def value_at(doc: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at a dotted path."""
    try:
        return True, refs.lookup(doc, refs.Reference(step="gate", path=dotted(path), text=path))
    except refs.RefError:
        return False, None


def verdict_of(gate: Gate, check_result: Any) -> tuple[bool, Any, Any]:
    """(passed, the value at `pass`, the score or None) of one check item's result."""
    _, value = value_at(check_result, gate.pass_path)
    score = value_at(check_result, gate.score)[1] if gate.score else None
    return value is True, value, score


def base_fingerprint(gate: Gate, args: dict[str, Any]) -> str:
    """What a stored regeneration number belongs to: the unvaried args and the variation rule. A changed
    prompt (or `vary`) starts the item again at regeneration 0; a changed `max_regenerations` does not."""
    return cachekey.sha({"args": args, "vary": gate.vary.model_dump()})


def varied(gate: Gate, args: dict[str, Any], regeneration: int) -> dict[str, Any]:
    """`args` with the integer at `vary.arg` raised by `add × regeneration`. Raises RefError when there is no
    integer there (checked at regeneration 0 too, so a bad path fails before anything is judged)."""
    path = dotted(gate.vary.arg)
    found, value = value_at(args, gate.vary.arg)
    if not found:
        raise refs.RefError(f"gate vary.arg '{gate.vary.arg}': the resolved args have no such field")
    if not isinstance(value, int) or isinstance(value, bool):
        raise refs.RefError(f"gate vary.arg '{gate.vary.arg}': needs an integer, the resolved args have "
                            f"{type(value).__name__} {str(value)[:60]!r}")
    if regeneration == 0:
        return args
    out = refs.copy_json(args)
    parent = out
    for seg in path[:-1]:
        parent = parent[seg if isinstance(parent, list) else str(seg)]
    parent[path[-1] if isinstance(parent, list) else str(path[-1])] = value + gate.vary.add * regeneration
    return out


def describe(check_step: str, gate: Gate) -> str:
    """One line for `--dry-run` / `--explain`: what the gate would do."""
    sign = "+" if gate.vary.add >= 0 else "-"
    return (f"{check_step} gates {gate.regenerates}: item i passes when '{gate.pass_path}' is true; else "
            f"{gate.regenerates}[i] is made again with {gate.vary.arg} {sign} {abs(gate.vary.add)} × r, "
            f"r = 1..{gate.max_regenerations}; when exhausted: {gate.on_exhausted}")


def plan_lines(gated_by: dict[str, str], steps: dict[str, Any], selected: list[str]) -> list[tuple[str, str, str]]:
    """(gate step, regenerated step, what it would do) for each gate whose two steps are selected."""
    return [(check, target, describe(check, steps[check].gate))
            for target, check in gated_by.items() if target in selected and check in selected]


# static checks (`validate`) ------------------------------------------------------------------------------------
def gate_problems(steps: list[tuple[int, dict]], schemas: SchemaStore) -> list[tuple[str, str, str]]:
    """(json path, message, type) for every gate of the raw manifest's steps."""
    by_id = {s["id"]: (i, s) for i, s in steps if isinstance(s.get("id"), str)}
    problems: list[tuple[str, str, str]] = []
    regenerated: dict[str, str] = {}
    for i, s in steps:
        gate = s.get("gate")
        if not isinstance(gate, dict):
            continue
        base = f"$.steps[{i}].gate"
        target = gate.get("regenerates")
        found = _target_problems(s, target, by_id, base)
        problems += found
        if found or not isinstance(target, str):
            continue
        if target in regenerated:
            problems.append((f"{base}.regenerates", f"step '{target}' is already regenerated by the gate of "
                             f"'{regenerated[target]}' (one gate per step)", "gate_duplicate"))
        regenerated[target] = s.get("id", "?")
        problems += _vary_problems(gate.get("vary"), by_id[target], base)
        problems += _check_path_problems(gate, s.get("worker"), base, schemas)
    return problems


def _target_problems(step: dict, target: Any, by_id: dict[str, tuple[int, dict]], base: str) -> list[tuple]:
    where = f"{base}.regenerates"
    if not step.get("foreach"):
        return [(base, "a gate judges items: it belongs on a foreach step that streams from `regenerates`",
                 "gate_needs_foreach")]
    if not isinstance(target, str):
        return []  # the schema check reports it
    if target == step.get("id"):
        return [(where, "a gate cannot regenerate its own step", "self_reference")]
    if target not in by_id:
        return [(where, f"unknown step '{target}'", "unknown_step")]
    producer = by_id[target][1]
    if not producer.get("foreach"):
        return [(where, f"step '{target}' is not a foreach step: only items can be regenerated", "gate_not_foreach")]
    if isinstance(producer.get("gate"), dict):
        return [(where, f"step '{target}' has a gate of its own: a gated check cannot be regenerated by another "
                 "gate", "gate_chain")]
    foreach = step.get("foreach")
    lists = [foreach] if isinstance(foreach, str) else list(foreach.values()) if isinstance(foreach, dict) else [0]
    if not all(isinstance(text, str) for text in lists):
        return []  # the schema check reports it
    args = step.get("args") if isinstance(step.get("args"), dict) else {}
    streams = fanout.stream_source(foreach, {target}, args) == target
    if not streams or target in (step.get("needs") or []):
        return [(where, f"the gated step must stream from '{target}': `foreach` exactly "
                 f"`${{steps.{target}.result}}`, without `needs: [{target}]` or a whole-list reference to it",
                 "gate_not_streaming")]
    return []


def waits_on_whole(check: str, target: str, deps: dict[str, list[str]]) -> str | None:
    """A dependency of the gate step, other than the stream it judges, that needs the whole regenerated step:
    it would wait for verdicts that wait for the gate step itself (a deadlock). Returns it, or None."""
    for first in deps[check]:
        if first == target:
            continue
        stack, seen = [first], set()
        while stack:
            sid = stack.pop()
            if sid == target:
                return first
            if sid not in seen:
                seen.add(sid)
                stack.extend(deps.get(sid, []))
    return None


def _vary_problems(vary: Any, producer: tuple[int, dict], base: str) -> list[tuple]:
    """`vary.arg` must name an integer in the producer's args; a placeholder on the way is checked at run time."""
    if not isinstance(vary, dict) or not isinstance(vary.get("arg"), str) or not vary["arg"]:
        return []
    node: Any = producer[1].get("args") if isinstance(producer[1].get("args"), dict) else {}
    where, target = f"{base}.vary.arg", f"$.steps[{producer[0]}].args"
    for seg in dotted(vary["arg"]):
        if isinstance(node, str) and (refs.REF_MARKER in node or node.startswith(fanout.ITEM_MARKER)):
            return []  # resolved at run time: checked then (invalid_reference)
        if isinstance(node, dict) and str(seg) in node:
            node, target = node[str(seg)], refs.json_path(target, str(seg))
        elif isinstance(node, list) and isinstance(seg, int) and seg < len(node):
            node, target = node[seg], refs.json_path(target, seg)
        else:
            return [(where, f"'{vary['arg']}' is not in the args of '{producer[1].get('id')}' (stopped at "
                     f"{target})", "gate_vary_arg")]
    if node == fanout.INDEX_TEXT or (isinstance(node, str) and (refs.parse(node) or fanout.parse_item(node))):
        return []
    if isinstance(node, int) and not isinstance(node, bool):
        return []
    return [(where, f"'{vary['arg']}' must be an integer in the args of '{producer[1].get('id')}', "
             f"{target} is {type(node).__name__} {str(node)[:60]!r}", "gate_vary_arg")]


def _check_path_problems(gate: dict, worker: Any, base: str, schemas: SchemaStore) -> list[tuple]:
    """`pass` and `score` against the gated worker's result schema, when it has one."""
    schema = schemas.result_schema(worker) if isinstance(worker, str) else None
    if schema is None:
        return []
    problems = []
    for name in ("pass", "score"):
        text = gate.get(name)
        if isinstance(text, str) and text:
            why = path_in_schema(schema, dotted(text))
            if why:
                problems.append((f"{base}.{name}", f"'{text}': {worker} results have {why}", "unknown_result_path"))
    return problems
