"""Talking to a worker through the contract only: argv + args file in; one JSON envelope on stdout, the exit
code and stderr JSON lines out. No worker code is imported; this is what a C# host does too."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import safefs
from .answer import AttemptOutcome, classify, single_json, tail_text
from .process import WorkerEventHandler, run_process
from .schemas import SchemaStore


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


def program_identity(program: str) -> str:
    """The file a program name stands for (links resolved, bare names looked up on PATH): `python` and
    `python3` naming one interpreter are one worker identity, whatever the runner's cwd."""
    found = program if os.path.isabs(program) else shutil.which(program)
    return os.path.realpath(found) if found and os.path.isfile(found) else program


@dataclass(frozen=True)
class WorkerIdentity:
    name: str
    version: str
    contract_version: str
    argv: tuple[str, ...]
    warm: bool = False  # speaks `--serve` (contract 1.2 `warm: true`); not part of the cache key
    model_key_fields: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        argv = list(self.argv)
        if argv:
            argv[0] = program_identity(argv[0])
        return {"name": self.name, "version": self.version, "contract_version": self.contract_version,
                "argv": argv}


class DescribeFailed(RuntimeError):
    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


def describe(prefix: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float,
             cancel: threading.Event | None = None) -> WorkerIdentity:
    """`<worker> --describe` -> identity (name, worker version, contract version). Loads no model."""
    try:
        proc = run_process(describe_argv(prefix), cwd=cwd, env=env, timeout_s=timeout_s, kill_grace_s=2.0,
                           cancel=cancel)
    except OSError as exc:
        raise DescribeFailed(f"cannot start worker {prefix!r}: {exc}") from None
    if proc.cancelled:
        raise DescribeFailed("interrupted")
    if proc.timed_out:
        raise DescribeFailed(f"`--describe` did not answer within {timeout_s:g} s (the longest timeout_s of the "
                             "steps that use this worker)")
    doc, problem = single_json(proc.stdout)
    if proc.exit_code != 0 or problem or not isinstance(doc, dict):
        why = problem or f"answered {type(doc).__name__}"
        raise DescribeFailed(f"`{' '.join(describe_argv(prefix))}` failed (exit {proc.exit_code}; {why})"
                             + tail_text(proc.stderr_tail), exit_code=proc.exit_code)
    missing = [k for k in ("name", "version", "contract_version") if not isinstance(doc.get(k), str)]
    if missing:
        raise DescribeFailed(f"`--describe` answer lacks {', '.join(missing)}", exit_code=proc.exit_code)
    fields = doc.get("model_key_fields")
    fields = tuple(fields) if isinstance(fields, list) and all(isinstance(f, str) for f in fields) else None
    return WorkerIdentity(doc["name"], doc["version"], doc["contract_version"], tuple(prefix),
                          warm=doc.get("warm") is True, model_key_fields=fields)


@dataclass
class AttemptFiles:
    """Where one attempt's files go: the args file and stderr log (kept), and the staging dir (output_dir)."""

    args_file: Path
    stderr_log: Path
    staging_dir: Path


def write_args_file(files: AttemptFiles, args: dict[str, Any]) -> None:
    files.args_file.parent.mkdir()  # a fresh, uniquely named directory: never an existing one (or a link)
    safefs.write_new(files.args_file, json.dumps(args, ensure_ascii=False, indent=1).encode("utf-8"))


def run_written_attempt(prefix: list[str], *, files: AttemptFiles, cwd: Path, env: dict[str, str],
                        schemas: SchemaStore, worker: str, timeout_s: float, kill_grace_s: float,
                        cancel: threading.Event | None, on_event: WorkerEventHandler | None,
                        on_start: Callable[[int], None] | None = None) -> AttemptOutcome:
    """Run the worker once on the args file already written, classify the answer."""
    try:
        proc = run_process(invoke_argv(prefix, files.args_file), cwd=cwd, env=env, timeout_s=timeout_s,
                           kill_grace_s=kill_grace_s, cancel=cancel, on_event=on_event,
                           stderr_log=files.stderr_log, on_start=on_start)
    except OSError as exc:  # the executable is missing or not executable: a retry cannot help
        return AttemptOutcome(ok=False, kind="worker_unavailable", message=f"cannot start worker {prefix!r}: {exc}")
    return classify(proc, schemas, worker, files.staging_dir, timeout_s)
