"""Helpers for the bridge tests: manifests for the fixture worker, schema directory, event reading."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURE = str(REPO / "tests" / "fixtures" / "fixture_worker.py")
#: A stand-alone contract worker that starts in milliseconds and can misbehave (tests/fixtures/bare_worker.py).
BARE = str(REPO / "tests" / "fixtures" / "bare_worker.py")
COMMITTED_SCHEMAS = REPO / "schemas"


def schema_dir(tmp: Path) -> Path:
    """The committed schemas when present; else the envelope schema generated from the contract models.

    (The tests may import the contract; the bridge itself only reads the schema files.)
    """
    if (COMMITTED_SCHEMAS / "envelope.schema.json").is_file():
        return COMMITTED_SCHEMAS
    from workers.contract import ResultEnvelope, schemagen

    out = tmp / "schemas"
    out.mkdir(parents=True, exist_ok=True)
    doc = schemagen._document(ResultEnvelope, "envelope.schema.json", "Worker result envelope", "serialization")
    (out / "envelope.schema.json").write_text(schemagen.render(doc), encoding="utf-8")
    return out


def fixture_manifest(steps: list[dict[str, Any]], *, name: str = "t", retry: dict | None = None,
                     timeout_s: float | None = None, kill_grace_s: float = 1.0, **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"retry": retry or {"max_attempts": 3, "backoff_s": [0, 0.2]},
                                "kill_grace_s": kill_grace_s}
    if timeout_s is not None:
        defaults["timeout_s"] = timeout_s
    return {"version": 1, "name": name, "defaults": defaults,
            "workers": {"fixture": [sys.executable, FIXTURE]}, "steps": steps, **extra}


def bare_manifest(steps: list[dict[str, Any]], *, name: str = "t", max_attempts: int = 1,
                  **extra: Any) -> dict[str, Any]:
    """A manifest whose steps use the bare worker (`"worker": "bare"`), one attempt each unless told."""
    defaults: dict[str, Any] = {"retry": {"max_attempts": max_attempts, "backoff_s": [0]}, "kill_grace_s": 1.0}
    return {"version": 1, "name": name, "defaults": defaults, "workers": {"bare": [sys.executable, BARE]},
            "steps": steps, **extra}


def run_runner(manifest: Path, schemas: Path, overrides: list[tuple[str, str]] | None = None, **opts: Any):
    """Run a manifest in this process (`overrides`: `--param` NAME, VALUE pairs): (exit code, console, Runner)."""
    import io

    from bridge.manifest import load
    from bridge.runner import Runner, RunOptions
    from bridge.schemas import SchemaStore

    out = io.StringIO()
    store = SchemaStore(schemas)
    runner = Runner(load(manifest, store, overrides), RunOptions(**opts), schemas=store, console=out)
    return runner.run(), out.getvalue(), runner


def state_rows(workdir: Path, sql: str) -> list[tuple]:
    """Rows of a query on WORKDIR/.bridge/state.db."""
    import sqlite3

    db = sqlite3.connect(workdir / ".bridge" / "state.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def trace(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "trace.json").read_text("utf-8"))


def write_manifest(directory: Path, doc: dict[str, Any], file_name: str = "m.manifest.json") -> Path:
    path = directory / file_name
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def lines(path: Path) -> int:
    return len(path.read_text("utf-8").splitlines()) if path.exists() else 0


def wait_for(predicate, timeout_s: float = 20.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def bridge_env(schemas: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["STORYBRIDGE_SCHEMA_DIR"] = str(schemas)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def process_alive(proc) -> bool:
    """A psutil.Process still running (a zombie, dead and not reaped yet, is not)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
