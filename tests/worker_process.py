"""Run a worker as a real process and read its one answer: helpers shared by the contract tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

from conftest import FIXTURE_WORKER, REPO

ENVELOPE_SCHEMA = json.loads((REPO / "schemas" / "envelope.schema.json").read_text("utf-8"))
NARRATION = REPO / "examples" / "demo" / "narration.ogg"


def run(argv: list[str], tmp_path: Path, args: dict | None = None, *, stdin: bytes | None = None,
        env: dict | None = None) -> tuple[int, dict]:
    """Run a worker process; (exit code, its one stdout document), which must be a valid envelope."""
    if args is not None:
        (tmp_path / "args.json").write_text(json.dumps(args), encoding="utf-8")
        argv = [*argv, "--input", str(tmp_path / "args.json")]
    proc = subprocess.run(argv, capture_output=True, input=stdin, cwd=REPO, timeout=240,
                          env={**os.environ, **(env or {})})
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1, f"one JSON line expected, got {lines!r}; stderr: {proc.stderr.decode()[-2000:]}"
    doc = json.loads(lines[0])
    jsonschema.Draft202012Validator(ENVELOPE_SCHEMA).validate(doc)
    return proc.returncode, doc


WHISPER = [sys.executable, "-m", "workers.whisper"]
FIXTURE = [sys.executable, str(FIXTURE_WORKER)]


def whisper_args(tmp_path: Path, **fields) -> dict:
    return {"audio_path": str(NARRATION), "model": "tiny.en", "output_dir": str(tmp_path / "out"), **fields}


def paths(doc: dict) -> set[str]:
    return {e["path"] for e in doc["error"]["details"]["field_errors"]}


def minimal_document(schema: dict, sub: dict | None = None) -> object:
    """The schema's first example, else the simplest value `sub` (default: the whole schema) accepts: required
    fields only, "x" for strings, the minimum for numbers, one item per required list item. Enough for the schemas of our workers; the caller
    checks the result against the schema."""
    if sub is None and schema.get("examples"):  # the schema's own example: valid under its cross-field rules too
        return dict(schema["examples"][0])
    sub = schema if sub is None else sub
    if "$ref" in sub:
        return minimal_document(schema, schema["$defs"][sub["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in sub:
        return minimal_document(schema, sub["anyOf"][-1] if {"type": "null"} not in sub["anyOf"] else {"type": "null"})
    kind = sub.get("type")
    if "enum" in sub:
        return sub["enum"][0]
    if kind == "object":
        return {k: minimal_document(schema, sub["properties"][k]) for k in sub.get("required", [])}
    if kind == "array":
        return [minimal_document(schema, sub.get("items", {})) for _ in range(sub.get("minItems", 0))]
    return {"string": "x", "integer": sub.get("minimum", 0), "number": sub.get("minimum", 0.0), "boolean": False,
            "null": None}.get(kind, "x")


class OutOfMemoryError(RuntimeError):
    """Named like torch.OutOfMemoryError: the runtime recognises it by name, without torch."""


def fail_first_calls(monkeypatch, pipeline_class, failures: int, record) -> list:
    """Patch `pipeline_class.__call__` so its first `failures` calls raise an OOM; `record(kwargs)` of every call
    is collected in the returned list (what the ladder tried)."""
    original = pipeline_class.__call__
    seen: list = []

    def call(self, *args, **kwargs):
        seen.append(record(kwargs))
        if len(seen) <= failures:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", call)
    return seen


class ServeSession:
    """One `--serve` worker process: send a run request, read its one answer line."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen([*argv, "--serve"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        assert json.loads(self.proc.stdout.readline())["event"] == "ready"

    def run(self, request_id: str, args: dict) -> dict:
        self.proc.stdin.write(json.dumps({"id": request_id, "args": args}).encode() + b"\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["id"] == request_id
        return answer

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
