"""The run manifest: pydantic models (the source of `schemas/manifest.schema.json`) and static checks.

`load(path)` returns a checked `LoadedManifest` or raises `ManifestInvalid` carrying *every* problem found
(schema violations, duplicate ids, unknown steps in `needs` or references, unknown result paths where the
producer has a result schema, cycles, a user-given `output_dir`), each with a JSON path.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from . import refs
from .schemas import SchemaStore, path_in_schema

MANIFEST_VERSION = 1

#: Error kinds a retry may be configured for. invalid_input and model_unavailable never retry.
RetryKind = Literal["transient", "resource", "external", "internal", "crash", "timeout", "output_invalid", "protocol"]
DEFAULT_RETRY_ON: list[str] = ["transient", "resource", "external", "crash", "timeout"]
#: In a `workers` argv, this exact element is replaced by the runner's interpreter (sys.executable).
PYTHON_TOKEN = "${python}"

StepId = Annotated[str, StringConstraints(pattern=r"^" + refs.STEP_ID_PATTERN + r"$", max_length=100)]
WorkerName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)]
ArgvItem = Annotated[str, StringConstraints(min_length=1)]


class RetryPolicy(BaseModel):
    """When and how often a failed attempt is tried again."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=4, ge=1, le=100, description="Attempts in all, the first one included.")
    backoff_s: list[Annotated[float, Field(ge=0, le=86400)]] = Field(
        default_factory=lambda: [0.0, 5.0, 15.0], min_length=1,
        description="Seconds to wait before retry 1, 2, 3, ...; the last value repeats. Default: 0, 5, 15.",
    )
    retry_on: list[RetryKind] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON),
        description="Error kinds that are retried (when the worker does not say retryable=false). "
        "`crash`: the worker exited without a JSON answer; `timeout`: killed at timeout_s.",
    )
    jitter_fraction: float = Field(default=0.0, ge=0, le=1, description="Random extra wait, up to this fraction of the delay.")


class RetryOverride(BaseModel):
    """A step's retry settings; unset fields come from `defaults.retry`."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(default=None, ge=1, le=100)
    backoff_s: list[Annotated[float, Field(ge=0, le=86400)]] | None = Field(default=None, min_length=1)
    retry_on: list[RetryKind] | None = None
    jitter_fraction: float | None = Field(default=None, ge=0, le=1)


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float = Field(default=3600.0, gt=0, description="Wall-clock limit of one attempt.")
    kill_grace_s: float = Field(default=5.0, ge=0, le=300,
                                description="Seconds between SIGTERM and SIGKILL when a worker tree is stopped.")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StepId = Field(description="Unique step id (letters, digits, '_' and '-').")
    worker: WorkerName = Field(description="Worker name: a key of `workers`, else run as `python -m workers.<name>`.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="The worker's args document, without `output_dir` (the runner sets it). Strings that are "
        "exactly `${steps.ID.result.PATH}` are replaced by that value.",
    )
    needs: list[StepId] = Field(default_factory=list, description="Extra dependencies (references imply their own).")
    retry: RetryOverride | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    optional: bool = Field(default=False, description="A failure does not fail the run; dependants are skipped.")
    ignore_input_files: list[str] = Field(
        default_factory=list,
        description="Top-level arg names whose values are never hashed as input files (e.g. a log or counter "
        "file the worker writes). Their values still count as args.",
    )
    description: str | None = None

    def retry_policy(self, defaults: Defaults) -> RetryPolicy:
        base = defaults.retry.model_dump()
        if self.retry is not None:
            base.update({k: v for k, v in self.retry.model_dump().items() if v is not None})
        return RetryPolicy.model_validate(base)


class Manifest(BaseModel):
    """A storybridge run manifest: steps that call contract workers, with dependencies, retries and timeouts."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema", description="Optional, for editors.")
    version: Literal[1] = Field(description="Manifest format version.")
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    workdir: str | None = Field(default=None, description="Run directory; relative to the manifest. "
                                "Default: `<name>.work` next to the manifest.")
    defaults: Defaults = Field(default_factory=Defaults)
    workers: dict[WorkerName, Annotated[list[ArgvItem], Field(min_length=1)]] = Field(
        default_factory=dict,
        description=f"Worker name -> argv prefix (the runner appends `--input ARGS.json`). `{PYTHON_TOKEN}` is the "
        "runner's interpreter. Default for a name not listed: [python, -m, workers.<name>].",
    )
    steps: list[Step] = Field(min_length=1)


@dataclass
class Problem:
    path: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "type": self.type}


class ManifestInvalid(Exception):
    def __init__(self, problems: list[Problem], source: str):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)")

    def lines(self) -> list[str]:
        return [f"{p.path}: {p.message} [{p.type}]" for p in self.problems]


@dataclass
class LoadedManifest:
    manifest: Manifest
    path: Path
    base_dir: Path
    workdir: Path
    order: list[str]  # topological order (manifest order among independent steps)
    deps: dict[str, list[str]]  # step -> direct dependencies (needs + references), in manifest order
    steps: dict[str, Step] = field(default_factory=dict)

    def worker_argv(self, worker: str) -> list[str]:
        prefix = self.manifest.workers.get(worker)
        if prefix is None:
            return [sys.executable, "-m", f"workers.{worker}"]
        return [sys.executable if item == PYTHON_TOKEN else item for item in prefix]

    def ancestors(self, step_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.deps[step_id])
        while stack:
            s = stack.pop()
            if s not in seen:
                seen.add(s)
                stack.extend(self.deps[s])
        return seen

    def dependants(self, step_id: str) -> set[str]:
        return {s for s in self.order if step_id in self.ancestors(s)}


def _loc_path(loc: tuple[Any, ...]) -> str:
    path = "$"
    for part in loc:
        path = refs.json_path(path, part if isinstance(part, int) else str(part))
    return path


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_document(path: Path) -> Any:
    """Parse the manifest file, or raise ManifestInvalid with one `$` problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestInvalid([Problem("$", f"cannot read {path}: {exc.strerror or exc}", "unreadable")], str(path)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        problem = Problem("$", f"not UTF-8: {exc}", "encoding")
    except RecursionError:
        problem = Problem("$", "JSON nested too deeply", "json")
    except ValueError as exc:
        problem = Problem("$", f"not valid JSON: {exc}", "json")
    raise ManifestInvalid([problem], str(path))


def _structure_problems(doc: Any, schemas: SchemaStore) -> list[Problem]:
    """Checks beyond the schema, done on the raw document so they run even when the schema check fails."""
    problems: list[Problem] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        return problems
    steps = [(i, s) for i, s in enumerate(doc["steps"]) if isinstance(s, dict)]
    ids: dict[str, int] = {}
    for i, s in steps:
        sid = s.get("id")
        if isinstance(sid, str):
            if sid in ids:
                problems.append(Problem(f"$.steps[{i}].id", f"duplicate step id '{sid}' (first at $.steps[{ids[sid]}])", "duplicate_id"))
            else:
                ids[sid] = i
    workers = doc.get("workers") if isinstance(doc.get("workers"), dict) else {}
    worker_of = {s["id"]: s.get("worker") for _, s in steps if isinstance(s.get("id"), str)}
    edges: dict[str, list[str]] = {sid: [] for sid in ids}
    for i, s in steps:
        sid = s.get("id") if isinstance(s.get("id"), str) else None
        base = f"$.steps[{i}]"
        worker = s.get("worker")
        if isinstance(worker, str) and worker not in workers and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", worker):
            problems.append(Problem(f"{base}.worker", f"worker '{worker}' is not in `workers` and is not a module name "
                                    "usable as `python -m workers.<name>`", "unknown_worker"))
        needs = s.get("needs")
        if isinstance(needs, list):
            for j, dep in enumerate(needs):
                if not isinstance(dep, str):
                    continue
                if dep == sid:
                    problems.append(Problem(f"{base}.needs[{j}]", "a step cannot need itself", "self_dependency"))
                elif dep not in ids:
                    problems.append(Problem(f"{base}.needs[{j}]", f"unknown step '{dep}'", "unknown_step"))
                elif isinstance(sid, str) and sid in edges:
                    edges[sid].append(dep)
        args = s.get("args")
        if not isinstance(args, dict):
            continue
        if "output_dir" in args:
            problems.append(Problem(f"{base}.args.output_dir", "output_dir is set by the runner (each attempt gets "
                                    "its own staging directory); remove it", "runner_owned"))
        found, bad = refs.find(args, f"{base}.args")
        for where, text in bad:
            problems.append(Problem(where, f"{text[:120]!r} is not a reference: a reference must be the whole string "
                                    "`${steps.ID.result.PATH}` (no interpolation)", "bad_reference"))
        for where, ref in found:
            if ref.step == sid:
                problems.append(Problem(where, f"{ref.text}: a step cannot reference its own result", "self_reference"))
                continue
            if ref.step not in ids:
                problems.append(Problem(where, f"{ref.text}: unknown step '{ref.step}'", "unknown_step"))
                continue
            if isinstance(sid, str) and sid in edges:
                edges[sid].append(ref.step)
            producer = worker_of.get(ref.step)
            schema = schemas.result_schema(producer) if isinstance(producer, str) else None
            if schema is not None:
                why = path_in_schema(schema, ref.path)
                if why:
                    problems.append(Problem(where, f"{ref.text}: {producer} results have {why}", "unknown_result_path"))
    for cycle in _cycles(edges):
        first = ids[cycle[0]]
        problems.append(Problem(f"$.steps[{first}]", "dependency cycle: " + " -> ".join(cycle + [cycle[0]]), "cycle"))
    return problems


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected group (iterative DFS)."""
    color = dict.fromkeys(edges, 0)  # 0 new, 1 on stack, 2 done
    cycles: list[list[str]] = []
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
                    cycles.append(cycle)
            else:
                color[node] = 2
                path.pop()
    return cycles


def check_document(doc: Any, manifest_path: Path, schemas: SchemaStore | None = None) -> LoadedManifest:
    """Validate a parsed manifest document; raise ManifestInvalid listing every problem."""
    schemas = schemas or SchemaStore()
    problems: list[Problem] = []
    manifest: Manifest | None = None
    if not isinstance(doc, dict):
        problems.append(Problem("$", f"a manifest is a JSON object, got {type(doc).__name__}", "object_type"))
    else:
        try:
            manifest = Manifest.model_validate(doc)
        except ValidationError as exc:
            for e in exc.errors():
                problems.append(Problem(_loc_path(e["loc"]), e["msg"], e["type"]))
        except RecursionError:
            problems.append(Problem("$", "document nested too deeply", "json"))
    problems += _structure_problems(doc, schemas)
    if manifest is not None:
        for where, value in _floats(doc, "$"):
            if not math.isfinite(value):
                problems.append(Problem(where, "NaN/Infinity are not JSON", "json"))
    if problems or manifest is None:
        raise ManifestInvalid(problems, str(manifest_path))

    steps = {s.id: s for s in manifest.steps}
    deps: dict[str, list[str]] = {}
    for s in manifest.steps:
        found, _ = refs.find(s.args, "$")
        ordered = list(s.needs) + [r.step for _, r in found]
        deps[s.id] = list(dict.fromkeys(ordered))
    order = _topological(manifest, deps)
    base_dir = manifest_path.resolve().parent
    workdir = Path(os.path.expanduser(manifest.workdir)) if manifest.workdir else Path(f"{manifest.name}.work")
    workdir = workdir if workdir.is_absolute() else base_dir / workdir
    return LoadedManifest(manifest=manifest, path=manifest_path.resolve(), base_dir=base_dir, workdir=workdir,
                          order=order, deps=deps, steps=steps)


def _floats(value: Any, path: str):
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            yield where, item
        elif isinstance(item, dict):
            stack.extend((v, refs.json_path(where, str(k))) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, refs.json_path(where, i)) for i, v in enumerate(item))


def _topological(manifest: Manifest, deps: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm, always picking the earliest ready step in manifest order (stable, readable plans)."""
    position = {s.id: i for i, s in enumerate(manifest.steps)}
    remaining = {sid: set(d) for sid, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = sorted((sid for sid, d in remaining.items() if not d), key=position.__getitem__)
        sid = ready[0]  # a cycle was rejected earlier, so something is always ready
        order.append(sid)
        del remaining[sid]
        for d in remaining.values():
            d.discard(sid)
    return order


def load(path: str | os.PathLike[str], schemas: SchemaStore | None = None) -> LoadedManifest:
    manifest_path = Path(path)
    return check_document(read_document(manifest_path), manifest_path, schemas)
