"""Talking to a worker through the contract only: argv + args file in; one JSON envelope on stdout, the exit
code and stderr JSON lines out. No worker code is imported; this is what a C# host does too."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .process import ProcessResult, WorkerEventHandler, run_process
from .schemas import SchemaStore, error_lines

#: Worker error kinds the contract defines (mirrors workers.contract.ErrorKind; the bridge reads schemas, not code).
WORKER_KINDS = ("invalid_input", "model_unavailable", "resource", "transient", "external", "internal")
DESCRIBE_TIMEOUT_S = 120.0


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the runner's, with UTF-8 forced both ways and unbuffered stderr."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def invoke_argv(prefix: list[str], args_file: Path) -> list[str]:
    return [*prefix, "--input", str(args_file)]


def describe_argv(prefix: list[str]) -> list[str]:
    return [*prefix, "--describe"]


@dataclass(frozen=True)
class WorkerIdentity:
    name: str
    version: str
    contract_version: str
    argv: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        # `python` and `python3` (or a shim) naming the same interpreter are the same worker identity.
        argv = list(self.argv)
        if argv and os.path.isfile(argv[0]):
            argv[0] = os.path.realpath(argv[0])
        return {"name": self.name, "version": self.version, "contract_version": self.contract_version,
                "argv": argv}


class DescribeFailed(RuntimeError):
    pass


def describe(prefix: list[str], *, cwd: Path, env: dict[str, str], cancel: threading.Event | None = None,
             timeout_s: float = DESCRIBE_TIMEOUT_S) -> WorkerIdentity:
    """`<worker> --describe` -> identity (name, worker version, contract version). Loads no model."""
    try:
        proc = run_process(describe_argv(prefix), cwd=cwd, env=env, timeout_s=timeout_s, kill_grace_s=2.0,
                           cancel=cancel)
    except OSError as exc:
        raise DescribeFailed(f"cannot start worker {prefix!r}: {exc}") from None
    if proc.cancelled:
        raise DescribeFailed("interrupted")
    if proc.timed_out:
        raise DescribeFailed(f"`--describe` did not answer within {timeout_s:g} s")
    doc, problem = _single_json(proc.stdout)
    if proc.exit_code != 0 or problem or not isinstance(doc, dict):
        why = problem or f"answered {type(doc).__name__}"
        raise DescribeFailed(f"`{' '.join(describe_argv(prefix))}` failed (exit {proc.exit_code}; {why})"
                             + _tail(proc.stderr_tail))
    missing = [k for k in ("name", "version", "contract_version") if not isinstance(doc.get(k), str)]
    if missing:
        raise DescribeFailed(f"`--describe` answer lacks {', '.join(missing)}")
    return WorkerIdentity(doc["name"], doc["version"], doc["contract_version"], tuple(prefix))


def _tail(lines: list[str], n: int = 8) -> str:
    return ("; stderr: " + " | ".join(lines[-n:])) if lines else ""


def _single_json(stdout: bytes) -> tuple[Any, str | None]:
    """Exactly one JSON document on stdout (surrounding whitespace allowed), else a reason."""
    text = stdout.decode("utf-8", "replace").strip()
    if not text:
        return None, "nothing on stdout"
    decoder = json.JSONDecoder()
    try:
        doc, end = decoder.raw_decode(text)
    except ValueError as exc:
        return None, f"stdout is not JSON ({exc}): {text[:200]!r}"
    rest = text[end:].strip()
    if rest:
        return None, f"stdout holds more than one JSON document / trailing data: {rest[:120]!r}"
    return doc, None


@dataclass
class AttemptOutcome:
    """What one attempt amounted to, from the host's point of view."""

    ok: bool
    kind: str | None = None  # a worker ErrorKind, or crash | timeout | protocol | output_invalid | interrupted
    message: str = ""
    retryable: bool = False
    exit_code: int | None = None
    envelope: dict[str, Any] | None = None
    peak_rss_mb: float | None = None
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def error_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "retryable": self.retryable, "exit_code": self.exit_code}


def _exit_text(code: int | None) -> str:
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
    doc, problem = _single_json(proc.stdout)
    if problem is not None:
        if proc.exit_code != 0:
            return AttemptOutcome(ok=False, kind="crash", retryable=True, message=(
                f"worker died without a JSON answer ({_exit_text(proc.exit_code)}; {problem})" + _tail(proc.stderr_tail)),
                **base)
        return AttemptOutcome(ok=False, kind="protocol", message=(
            f"worker broke the contract: exit code 0 but {problem}" + _tail(proc.stderr_tail)), **base)
    lines = error_lines(schemas.envelope(), doc)
    if lines:
        return AttemptOutcome(ok=False, kind="protocol", message="worker answer violates envelope.schema.json: "
                              + "; ".join(lines), envelope=doc if isinstance(doc, dict) else None, **base)
    rss = doc.get("metrics") or {}
    if isinstance(rss.get("peak_rss_mb"), (int, float)):
        base["peak_rss_mb"] = max(rss["peak_rss_mb"], proc.peak_rss_mb or 0.0)
    warnings = list(doc.get("warnings") or [])
    if not doc["success"]:
        err = doc.get("error") or {}
        kind = err.get("kind", "internal")
        message = err.get("message", "")
        if proc.exit_code == 0:
            warnings.append("worker reported a failure with exit code 0")
        return AttemptOutcome(ok=False, kind=kind, message=message, retryable=bool(err.get("retryable")),
                              envelope=doc, warnings=warnings, **base)
    if proc.exit_code != 0:
        return AttemptOutcome(ok=False, kind="protocol", envelope=doc, message=(
            f"worker answered success but exited with {_exit_text(proc.exit_code)}"), **base)
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


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    # Same as workers.runtime.outputs.sha256_file on purpose: the bridge never imports worker code.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def verify_outputs(outputs: list[dict[str, Any]], inside: Path | None = None) -> list[str]:
    """Every output exists (inside `inside`, when given) with the reported size and sha256."""
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
        size = path.stat().st_size
        if size != out["bytes"]:
            problems.append(f"{path} has {size} bytes, the worker reported {out['bytes']}")
            continue
        digest = sha256_file(path)
        if digest != out["sha256"]:
            problems.append(f"{path} sha256 {digest[:12]}… differs from the reported {out['sha256'][:12]}…")
    return problems


def run_attempt(prefix: list[str], args: dict[str, Any], *, args_file: Path, staging_dir: Path, cwd: Path,
                env: dict[str, str], schemas: SchemaStore, worker: str, timeout_s: float, kill_grace_s: float,
                cancel: threading.Event | None, on_event: WorkerEventHandler | None,
                stderr_log: Path | None) -> AttemptOutcome:
    """Write the args file, run the worker once, classify the answer."""
    args_file.parent.mkdir(parents=True, exist_ok=True)
    args_file.write_text(json.dumps(args, ensure_ascii=False, indent=1), encoding="utf-8")
    try:
        proc = run_process(invoke_argv(prefix, args_file), cwd=cwd, env=env, timeout_s=timeout_s,
                           kill_grace_s=kill_grace_s, cancel=cancel, on_event=on_event, stderr_log=stderr_log)
    except OSError as exc:  # the executable is missing or not executable: a retry cannot help
        return AttemptOutcome(ok=False, kind="worker_unavailable", message=f"cannot start worker {prefix!r}: {exc}")
    return classify(proc, schemas, worker, staging_dir, timeout_s)
