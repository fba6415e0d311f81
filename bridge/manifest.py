"""The run manifest: pydantic models (the source of `schemas/manifest.schema.json`), loading and checking.

`load(path)` returns a checked `LoadedManifest` or raises `ManifestInvalid` carrying *every* problem found
(strict JSON: duplicate keys, lone surrogates, too deep nesting; schema violations; the step-graph checks of
`manifest_checks`), each with a JSON path.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, ValidationError

from . import fanout, params, refs
from .gate import Gate, waits_on_whole
from .jsondoc import MAX_NESTING, loads_strict, shape_problems
from .manifest_checks import Problem, structure_problems, topological_order
from .resources import Fallback, Resources
from .schemas import SchemaStore

MANIFEST_VERSION = 1

#: Error kinds a retry may be configured for. invalid_input and model_unavailable never retry.
RetryKind = Literal["transient", "resource", "external", "internal", "crash", "timeout", "output_invalid", "protocol"]
DEFAULT_RETRY_ON: list[str] = ["transient", "resource", "external", "crash", "timeout"]
#: In a `workers` argv, this exact element is replaced by the runner's interpreter (sys.executable).
PYTHON_TOKEN = "${python}"

StepId = Annotated[str, StringConstraints(pattern=r"^" + refs.STEP_ID_PATTERN + r"$", max_length=100)]
WorkerName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)]
ArgvItem = Annotated[str, StringConstraints(min_length=1)]
ListRef = Annotated[str, StringConstraints(pattern=r"^\$\{steps\.")]
ItemName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
#: A plain foreach names one list; a zipped one, 1-8 named lists. Tagged so that errors name only the form given.
Foreach = Annotated[
    Annotated[ListRef, Tag("list")] | Annotated[dict[ItemName, ListRef], Field(min_length=1, max_length=8), Tag("zip")],
    Discriminator(lambda value: "zip" if isinstance(value, dict) else "list"),
]
_FOREACH_TAGS = ("list", "zip")
ParamName = Annotated[str, StringConstraints(pattern=r"^" + params.PARAM_NAME_PATTERN + r"$", max_length=100)]


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
    foreach: Foreach | None = Field(
        default=None,
        description="`${steps.ID.result.PATH}` naming a list: the step runs once per item, with `${item}`, "
        "`${item.PATH}` and `${index}` in its args; each item is cached, retried and committed on its own. "
        "Zipped: an object of 1-8 names -> list references of one length; item i is an object of each "
        "list's i-th element under its name (`${item.NAME.PATH}`).",
    )
    resources: Resources | None = Field(default=None, description="What one attempt needs (slots, GPUs, memory).")
    fallback: Fallback | None = Field(default=None, description="`cpu`: without GPUs, a GPU step runs on CPU.")
    gate: Gate | None = Field(default=None, description="A quality gate on this foreach step's items: a failing "
                              "item has the item it checked (of `regenerates`) made again, with a varied arg.")

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
    params: dict[ParamName, Any] = Field(
        default_factory=dict,
        description="Param name -> default JSON value; `--param NAME=VALUE` overrides it (read as the default's "
        "type). `${params.NAME}` in a step's `args`, `foreach` or `gate` and in `workers` argv is replaced by the value "
        "(a whole string becomes the typed value; in a longer string, a string or number is interpolated).",
    )
    workers: dict[WorkerName, Annotated[list[ArgvItem], Field(min_length=1)]] = Field(
        default_factory=dict,
        description=f"Worker name -> argv prefix (the runner appends `--input ARGS.json`). `{PYTHON_TOKEN}` is the "
        "runner's interpreter. Default for a name not listed: [python, -m, workers.<name>].",
    )
    steps: list[Step] = Field(min_length=1)


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
    stream_from: dict[str, str] = field(default_factory=dict)  # foreach step -> the foreach step it streams from
    gated_by: dict[str, str] = field(default_factory=dict)  # foreach step -> the step whose gate regenerates it
    params: dict[str, Any] = field(default_factory=dict)  # the effective params (defaults with --param applied)

    def worker_argv(self, worker: str) -> list[str]:
        """The argv prefix of a worker. A relative program path (`./w.py`, `sub/w.py`) is made absolute against
        the manifest's directory, like relative args; a bare name (`w.py`) is looked up on PATH, as a shell would."""
        prefix = self.manifest.workers.get(worker)
        if prefix is None:
            return [sys.executable, "-m", f"workers.{worker}"]
        argv = [sys.executable if item == PYTHON_TOKEN else item for item in prefix]
        argv[0] = resolve_program(argv[0], self.base_dir)
        return argv

    def timeout_s(self, step: Step) -> float:
        return step.timeout_s or self.manifest.defaults.timeout_s

    def describe_timeout_s(self, worker: str) -> float:
        """`--describe` may take as long as the most patient step of that worker allows."""
        return max(self.timeout_s(s) for s in self.steps.values() if s.worker == worker)

    def ancestors(self, step_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.deps[step_id])
        while stack:
            s = stack.pop()
            if s not in seen:
                seen.add(s)
                stack.extend(self.deps[s])
        return seen


def resolve_program(program: str, base_dir: Path) -> str:
    """argv[0] as the worker will be started: `~` expanded, relative paths against `base_dir`, bare names as
    given (the OS looks them up on PATH)."""
    expanded = os.path.expanduser(program)
    has_dir = os.sep in expanded or (os.altsep is not None and os.altsep in expanded)
    if has_dir and not os.path.isabs(expanded):
        return str(base_dir / expanded)
    return expanded


def _loc_path(loc: tuple[Any, ...]) -> str:
    path = "$"
    for i, part in enumerate(loc):
        if i >= 2 and loc[i - 1] == "foreach" and isinstance(loc[i - 2], int) and part in _FOREACH_TAGS:
            continue  # pydantic names the union member taken; the document has no such level
        path = refs.json_path(path, part if isinstance(part, int) else str(part))
    return path


def read_document(path: Path) -> Any:
    """Parse the manifest file strictly, or raise ManifestInvalid with one `$` problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestInvalid([Problem("$", f"cannot read {path}: {exc.strerror or exc}", "unreadable")], str(path)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return loads_strict(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problem = Problem("$", f"not UTF-8: {exc}", "encoding")
    except RecursionError:
        problem = Problem("$", f"JSON nested too deeply to parse (the limit is {MAX_NESTING} levels)", "too_deep")
    except ValueError as exc:
        problem = Problem("$", f"not valid JSON: {exc}", "json")
    raise ManifestInvalid([problem], str(path))


def _schema_problems(doc: Any) -> tuple[Manifest | None, list[Problem]]:
    if not isinstance(doc, dict):
        return None, [Problem("$", f"a manifest is a JSON object, got {type(doc).__name__}", "object_type")]
    try:
        return Manifest.model_validate(doc), []
    except ValidationError as exc:
        return None, [Problem(_loc_path(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
    except RecursionError:
        return None, [Problem("$", "document nested too deeply", "too_deep")]


def check_document(doc: Any, manifest_path: Path, schemas: SchemaStore | None = None,
                   overrides: list[tuple[str, str]] | None = None) -> LoadedManifest:
    """Validate a parsed manifest document, its params resolved with `overrides` (`--param` NAME, VALUE pairs);
    raise ManifestInvalid listing every problem."""
    schemas = schemas or SchemaStore()
    problems = [Problem(p.path, p.message, p.type) for p in shape_problems(doc)]
    doc, values, param_problems = params.resolve_document(doc, overrides or [])  # iterative: any depth is safe
    problems += param_problems
    manifest, schema_problems = _schema_problems(doc)
    problems += schema_problems + structure_problems(doc, schemas)
    if problems or manifest is None:
        raise ManifestInvalid(problems, str(manifest_path))

    steps = {s.id: s for s in manifest.steps}
    deps: dict[str, list[str]] = {}
    for s in manifest.steps:
        found, _ = refs.find(s.args, "$")
        over = [ref.step for ref in fanout.list_refs(s.foreach).values()]
        deps[s.id] = list(dict.fromkeys(list(s.needs) + over + [r.step for _, r in found]))
    with_foreach = {s.id for s in manifest.steps if s.foreach}
    stream_from = {s.id: src for s in manifest.steps  # `needs: [A]` asks for all of A: no streaming then
                   if (src := fanout.stream_source(s.foreach, with_foreach, s.args)) is not None
                   and src not in s.needs}
    gated_by = {s.gate.regenerates: s.id for s in manifest.steps if s.gate is not None}
    problems = [Problem(f"$.steps[{i}].gate.regenerates", f"the gate step depends on '{dep}', which needs all of "
                        f"'{s.gate.regenerates}': it would wait for its own verdicts", "gate_waits_on_itself")
                for i, s in enumerate(manifest.steps)
                if s.gate is not None and (dep := waits_on_whole(s.id, s.gate.regenerates, deps))]
    if problems:
        raise ManifestInvalid(problems, str(manifest_path))
    order = topological_order([s.id for s in manifest.steps], deps)
    base_dir = manifest_path.resolve().parent
    workdir = Path(os.path.expanduser(manifest.workdir)) if manifest.workdir else Path(f"{manifest.name}.work")
    workdir = workdir if workdir.is_absolute() else base_dir / workdir
    return LoadedManifest(manifest=manifest, path=manifest_path.resolve(), base_dir=base_dir, workdir=workdir,
                          order=order, deps=deps, steps=steps, stream_from=stream_from, params=values,
                          gated_by=gated_by)


def load(path: str | os.PathLike[str], schemas: SchemaStore | None = None,
         overrides: list[tuple[str, str]] | None = None) -> LoadedManifest:
    manifest_path = Path(path)
    return check_document(read_document(manifest_path), manifest_path, schemas, overrides)
