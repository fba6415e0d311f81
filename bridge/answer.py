"""A worker's answer, judged from the host's side: one JSON envelope on stdout, the exit code, the output files.
See the classification table in docs/runner.md."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import safefs
from .jsondoc import MAX_NESTING, shape_problems
from .process import MAX_STDOUT_BYTES, ProcessResult
from .schemas import SchemaStore, error_lines

#: Worker error kinds the contract defines (mirrors workers.contract.ErrorKind; the bridge reads schemas, not code).
WORKER_KINDS = ("invalid_input", "model_unavailable", "resource", "transient", "external", "internal")
#: The exit code a one-shot worker uses per error kind (docs/contract.md); a warm answer is given the same, so
#: records read alike whichever way the attempt ran.
WORKER_EXIT_CODES = dict(zip(WORKER_KINDS, (2, 3, 4, 5, 6, 7), strict=True))
#: In staging, an output at least this large is checked by size and its reported sha256 is trusted: the worker
#: hashed it as it wrote it (workers/runtime/outputs.py), and a clip of gigabytes is not read twice.
TRUST_REPORTED_SHA_BYTES = 256 * 1024 * 1024
#: A worker's message is kept up to this many characters (it goes to state.db, events and trace.json).
MAX_MESSAGE_CHARS = 8000


@dataclass
class AttemptOutcome:
    """What one attempt amounted to, from the host's point of view."""

    ok: bool
    kind: str | None = None  # a worker ErrorKind, or crash | timeout | protocol | output_invalid | interrupted | ...
    message: str = ""
    retryable: bool = False
    exit_code: int | None = None
    envelope: dict[str, Any] | None = None
    peak_rss_mb: float | None = None
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    node: dict[str, Any] | None = None  # where a distributed executor ran it (node id, IP, devices, threads)

    def error_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "retryable": self.retryable, "exit_code": self.exit_code}


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters cut)"


def tail_text(lines: list[str], n: int = 8) -> str:
    return ("; stderr: " + " | ".join(lines[-n:])) if lines else ""


def single_json(stdout: bytes) -> tuple[Any, str | None]:
    """Exactly one JSON document on stdout (surrounding whitespace allowed), else a reason."""
    text = stdout.decode("utf-8", "replace").strip()
    if not text:
        return None, "nothing on stdout"
    try:
        doc, end = json.JSONDecoder().raw_decode(text)
    except RecursionError:
        return None, f"stdout is JSON nested too deeply to parse (the limit is {MAX_NESTING} levels)"
    except ValueError as exc:
        return None, f"stdout is not JSON ({exc}): {text[:200]!r}"
    rest = text[end:].strip()
    if rest:
        return None, f"stdout holds more than one JSON document / trailing data: {rest[:120]!r}"
    problems = shape_problems(doc)
    if problems:  # e.g. nested beyond MAX_NESTING, or a lone surrogate that no file or database could store
        first = problems[0]
        return None, f"the answer at {first.path[:200]} {first.message}"
    return doc, None


def exit_text(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def classify(proc: ProcessResult, schemas: SchemaStore, worker: str, staging_dir: Path,
             timeout_s: float | None) -> AttemptOutcome:
    """Turn a finished process into an outcome: parse + validate the envelope, verify its outputs."""
    base = {"exit_code": proc.exit_code, "wall_s": proc.wall_s, "peak_rss_mb": proc.peak_rss_mb}
    if proc.cancelled:
        return AttemptOutcome(ok=False, kind="interrupted", message="stopped: the runner was interrupted", **base)
    if proc.timed_out:
        return AttemptOutcome(ok=False, kind="timeout", retryable=True,
                              message=f"timed out after {timeout_s:g} s; the worker's process tree was killed", **base)
    if proc.stdout_over_cap:
        return AttemptOutcome(ok=False, kind="protocol", message=(
            f"worker broke the contract: stdout exceeded the {MAX_STDOUT_BYTES // (1024 * 1024)} MiB cap "
            f"({proc.stdout_bytes} bytes, {exit_text(proc.exit_code)}); an answer is one JSON document and large "
            "results belong in files under output_dir"), **base)
    doc, problem = single_json(proc.stdout)
    if problem is not None:
        if proc.exit_code != 0:
            return AttemptOutcome(ok=False, kind="crash", retryable=True, message=(
                f"worker died without a JSON answer ({exit_text(proc.exit_code)}; {problem})"
                + tail_text(proc.stderr_tail)), **base)
        return AttemptOutcome(ok=False, kind="protocol", message=(
            f"worker broke the contract: exit code 0 but {problem}" + tail_text(proc.stderr_tail)), **base)
    lines = error_lines(schemas.envelope(), doc)
    if lines:
        return AttemptOutcome(ok=False, kind="protocol", message="worker answer violates envelope.schema.json: "
                              + "; ".join(lines), envelope=doc if isinstance(doc, dict) else None, **base)
    return _judge_envelope(doc, proc, schemas, worker, staging_dir, base)


def _judge_envelope(doc: dict[str, Any], proc: ProcessResult, schemas: SchemaStore, worker: str, staging_dir: Path,
                    base: dict[str, Any]) -> AttemptOutcome:
    """A schema-valid envelope: the worker's own failure, a contract break, or a success whose outputs verify."""
    metrics = doc.get("metrics") or {}
    if isinstance(metrics.get("peak_rss_mb"), (int, float)):
        base["peak_rss_mb"] = max(metrics["peak_rss_mb"], proc.peak_rss_mb or 0.0)
    warnings = [clip(w, 2000) for w in doc.get("warnings") or []]
    if not doc["success"]:
        err = doc.get("error") or {}
        if proc.exit_code == 0:
            warnings.append("worker reported a failure with exit code 0")
        return AttemptOutcome(ok=False, kind=err.get("kind", "internal"), message=clip(err.get("message", "")),
                              retryable=bool(err.get("retryable")), envelope=doc, warnings=warnings, **base)
    if proc.exit_code != 0:
        return AttemptOutcome(ok=False, kind="protocol", envelope=doc, message=(
            f"worker answered success but exited with {exit_text(proc.exit_code)}"), **base)
    validator = schemas.result(worker)
    if validator is not None:
        lines = error_lines(validator, doc.get("result"))
        if lines:
            return AttemptOutcome(ok=False, kind="protocol", envelope=doc, message=(
                f"result violates {worker}.result.schema.json: " + "; ".join(lines)), **base)
    problems = verify_outputs(doc.get("outputs") or [], inside=staging_dir)
    if problems:
        return AttemptOutcome(ok=False, kind="output_invalid", envelope=doc,
                              message="outputs do not match the envelope: " + "; ".join(problems[:5]), **base)
    return AttemptOutcome(ok=True, envelope=doc, warnings=warnings, **base)


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class HashMemo(Protocol):
    def cached_hash(self, path: str, st: os.stat_result) -> str | None: ...


def verify_outputs(outputs: list[dict[str, Any]], inside: Path | None = None, memo: HashMemo | None = None) -> list[str]:
    """Every output is a regular file (inside `inside`, when given) with the reported size and sha256.

    A hash memoised for the same (path, size, mtime, inode, ctime) is not computed again (`memo`: the state
    DB). In staging (`inside`), files of TRUST_REPORTED_SHA_BYTES or more are checked by size only: their
    reported sha256 is trusted, not verified.
    """
    problems = []
    root = inside.resolve() if inside is not None else None
    for out in outputs:
        path = Path(out["path"])
        if root is not None and not _is_under(path.resolve(), root):
            problems.append(f"{path} lies outside the step's output_dir {root}")
            continue
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        st = path.stat()
        if st.st_size != out["bytes"]:
            problems.append(f"{path} has {st.st_size} bytes, the worker reported {out['bytes']}")
            continue
        if inside is not None and st.st_size >= TRUST_REPORTED_SHA_BYTES:
            continue
        if memo is not None and memo.cached_hash(str(path), st) == out["sha256"]:
            continue
        try:
            digest = safefs.sha256_regular_file(path)
        except OSError as exc:
            problems.append(f"{path} cannot be read: {exc.strerror or exc}")
            continue
        if digest != out["sha256"]:
            problems.append(f"{path} sha256 {(digest or 'none')[:12]}… differs from the reported {out['sha256'][:12]}…")
    return problems
