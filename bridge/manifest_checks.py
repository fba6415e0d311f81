"""Static checks of a manifest beyond its schema, and the step order.

They run on the raw parsed document, so they report even when the schema check fails: duplicate ids, unknown
workers, unknown or self dependencies, bad references, unknown result paths (where the producer has a result
schema), a user-given `output_dir`, cycles. The order is Kahn's algorithm, linear in steps + edges.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any

from . import fanout, refs
from .gate import gate_problems
from .schemas import SchemaStore, path_in_schema

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Problem:
    path: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "type": self.type}


@dataclass
class _Graph:
    """What the checks learn about the steps: id -> index, id -> worker, id -> dependencies found so far, and
    the foreach steps (whose result is the list of their item results)."""

    ids: dict[str, int]
    worker_of: dict[str, Any]
    edges: dict[str, list[str]]
    foreach: set[str]


def structure_problems(doc: Any, schemas: SchemaStore) -> list[Problem]:
    """Every problem of the step graph; an empty list when the document is not even shaped like a manifest."""
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        return []
    steps = [(i, s) for i, s in enumerate(doc["steps"]) if isinstance(s, dict)]
    ids, problems = _unique_ids(steps)
    graph = _Graph(ids=ids, worker_of={s["id"]: s.get("worker") for _, s in steps if isinstance(s.get("id"), str)},
                   edges={sid: [] for sid in ids},
                   foreach={s["id"] for _, s in steps if isinstance(s.get("id"), str) and s.get("foreach")})
    workers = doc.get("workers") if isinstance(doc.get("workers"), dict) else {}
    for i, s in steps:
        sid = s.get("id") if isinstance(s.get("id"), str) else None
        base = f"$.steps[{i}]"
        problems += _worker_problems(s.get("worker"), workers, base)
        problems += _needs_problems(s.get("needs"), sid, base, graph)
        if isinstance(s.get("args"), dict):
            problems += _args_problems(s["args"], sid, base, graph, schemas)
            problems += [Problem(*p) for p in fanout.item_problems(s["args"], f"{base}.args", s.get("foreach"))]
        foreach = s.get("foreach")
        if isinstance(foreach, str):
            problems += _foreach_problems(foreach, sid, f"{base}.foreach", graph, schemas)
        elif isinstance(foreach, dict):  # zipped: each list checked alike
            for name, text in foreach.items():
                if isinstance(text, str):
                    problems += _foreach_problems(text, sid, refs.json_path(f"{base}.foreach", name), graph, schemas)
    problems += [Problem(*p) for p in gate_problems(steps, schemas)]
    for cycle in cycles(graph.edges):
        problems.append(Problem(f"$.steps[{ids[cycle[0]]}]", "dependency cycle: " + " -> ".join(cycle + [cycle[0]]),
                                "cycle"))
    return problems


def _unique_ids(steps: list[tuple[int, dict]]) -> tuple[dict[str, int], list[Problem]]:
    ids: dict[str, int] = {}
    problems = []
    for i, s in steps:
        sid = s.get("id")
        if not isinstance(sid, str):
            continue
        if sid in ids:
            problems.append(Problem(f"$.steps[{i}].id", f"duplicate step id '{sid}' (first at $.steps[{ids[sid]}])",
                                    "duplicate_id"))
        else:
            ids[sid] = i
    return ids, problems


def _worker_problems(worker: Any, workers: dict, base: str) -> list[Problem]:
    if isinstance(worker, str) and worker not in workers and not _MODULE_NAME.fullmatch(worker):
        return [Problem(f"{base}.worker", f"worker '{worker}' is not in `workers` and is not a module name usable as "
                        "`python -m workers.<name>`", "unknown_worker")]
    return []


def _needs_problems(needs: Any, sid: str | None, base: str, graph: _Graph) -> list[Problem]:
    if not isinstance(needs, list):
        return []
    problems = []
    for j, dep in enumerate(needs):
        if not isinstance(dep, str):
            continue
        if dep == sid:
            problems.append(Problem(f"{base}.needs[{j}]", "a step cannot need itself", "self_dependency"))
        elif dep not in graph.ids:
            problems.append(Problem(f"{base}.needs[{j}]", f"unknown step '{dep}'", "unknown_step"))
        elif sid in graph.edges:
            graph.edges[sid].append(dep)
    return problems


def _args_problems(args: dict, sid: str | None, base: str, graph: _Graph, schemas: SchemaStore) -> list[Problem]:
    problems = []
    if "output_dir" in args:
        problems.append(Problem(f"{base}.args.output_dir", "output_dir is set by the runner (each attempt gets its own "
                                "staging directory); remove it", "runner_owned"))
    found, bad = refs.find(args, f"{base}.args")
    for where, text in bad:
        problems.append(Problem(where, f"{text[:120]!r} is not a reference: a reference must be the whole string "
                                "`${steps.ID.result.PATH}` (no interpolation)", "bad_reference"))
    for where, ref in found:
        if ref.step == sid:
            problems.append(Problem(where, f"{ref.text}: a step cannot reference its own result", "self_reference"))
        elif ref.step not in graph.ids:
            problems.append(Problem(where, f"{ref.text}: unknown step '{ref.step}'", "unknown_step"))
        else:
            if sid in graph.edges:
                graph.edges[sid].append(ref.step)
            problems += _result_path_problems(where, ref, graph, schemas)
    return problems


def _foreach_problems(text: str, sid: str | None, where: str, graph: _Graph, schemas: SchemaStore) -> list[Problem]:
    ref = refs.parse(text)
    if ref is None:
        return [Problem(where, f"{text[:120]!r} is not a reference `${{steps.ID.result.PATH}}`", "bad_reference")]
    if ref.step == sid:
        return [Problem(where, f"{ref.text}: a step cannot fan out over its own result", "self_reference")]
    if ref.step not in graph.ids:
        return [Problem(where, f"{ref.text}: unknown step '{ref.step}'", "unknown_step")]
    if sid in graph.edges:
        graph.edges[sid].append(ref.step)
    return _result_path_problems(where, ref, graph, schemas)


def _result_path_problems(where: str, ref: refs.Reference, graph: _Graph, schemas: SchemaStore) -> list[Problem]:
    producer = graph.worker_of.get(ref.step)
    schema = schemas.result_schema(producer) if isinstance(producer, str) else None
    if schema is None:
        return []
    path = ref.path
    if ref.step in graph.foreach:  # a list of item results: the first segment picks items, the rest is in one
        if path and not (isinstance(path[0], int) or path[0] == refs.WILDCARD):
            return [Problem(where, f"{ref.text}: '{ref.step}' is a foreach step, its result is the list of its item "
                            f"results: index it (`.0`) or map over it (`.*`), not '.{path[0]}'", "unknown_result_path")]
        path = path[1:]
    why = path_in_schema(schema, path)
    return [Problem(where, f"{ref.text}: {producer} results have {why}", "unknown_result_path")] if why else []


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected group (iterative DFS)."""
    color = dict.fromkeys(edges, 0)  # 0 new, 1 on stack, 2 done
    found: list[list[str]] = []
    in_cycle: set[str] = set()
    for root in edges:
        if color[root]:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, idx = stack.pop()
            if idx == 0:
                color[node] = 1
                path.append(node)
            nexts = edges[node]
            if idx < len(nexts):
                stack.append((node, idx + 1))
                nxt = nexts[idx]
                if color.get(nxt) == 0:
                    stack.append((nxt, 0))
                elif color.get(nxt) == 1 and nxt not in in_cycle:
                    cycle = path[path.index(nxt):]
                    in_cycle.update(cycle)
                    found.append(cycle)
            else:
                color[node] = 2
                path.pop()
    return found


def topological_order(ids: list[str], deps: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm; among ready steps the earliest in manifest order goes first (stable, readable plans).

    O((steps + edges) log steps). `deps` must be acyclic (cycles are rejected before this is called).
    """
    position = {sid: i for i, sid in enumerate(ids)}
    waiting = {sid: len(set(deps[sid])) for sid in ids}
    dependants: dict[str, list[str]] = {sid: [] for sid in ids}
    for sid in ids:
        for dep in set(deps[sid]):
            dependants[dep].append(sid)
    ready = [position[sid] for sid in ids if waiting[sid] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        sid = ids[heapq.heappop(ready)]
        order.append(sid)
        for after in dependants[sid]:
            waiting[after] -= 1
            if waiting[after] == 0:
                heapq.heappush(ready, position[after])
    return order
