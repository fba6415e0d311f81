"""How the runner calls a worker and reads its answer, with faked processes (pytest-subprocess `fp`)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from bridge_helpers import FIXTURE, fixture_manifest, schema_dir, write_manifest

from bridge.execute import rewrite_prefix
from bridge.manifest import load
from bridge.runner import EXIT_OK, EXIT_STEP_FAILED, Runner, RunOptions
from bridge.schemas import SchemaStore

PREFIX = [sys.executable, FIXTURE]
DESCRIBE = json.dumps({"name": "fixture", "version": "1.0.0", "contract_version": "1.0.0", "devices": ["cpu"]})


@pytest.fixture
def store(tmp_path_factory) -> SchemaStore:
    return SchemaStore(schema_dir(tmp_path_factory.mktemp("schemas")))


def envelope(success: bool = True, result=None, outputs=None, error=None) -> dict:
    return {"contract_version": "1.0.0", "worker": "fixture", "worker_version": "1.0.0", "success": success,
            "result": result if success else None, "error": error, "outputs": outputs or [],
            "metrics": {"load_s": 0, "run_s": 0, "peak_rss_mb": 12.5}, "warnings": []}


class _FixedUUID:
    hex = "0" * 32


@pytest.fixture(autouse=True)
def fixed_tags(monkeypatch):
    """Predictable staging dirs (`s-<attempt>-00000000`), so a faked answer can name its outputs up front."""
    monkeypatch.setattr("bridge.execute.uuid.uuid4", lambda: _FixedUUID())


def staging(tmp_path: Path, attempt: int = 1) -> Path:
    return (tmp_path / "t.work" / ".bridge" / "staging" / f"s-{attempt}-00000000").resolve()


@pytest.fixture
def popen_kwargs(monkeypatch) -> list[dict]:
    """Records the keyword arguments of every Popen the runner makes (then hands over to the fake)."""
    import bridge.process

    seen: list[dict] = []
    fake = subprocess.Popen

    def recording(argv, **kwargs):
        seen.append(kwargs)
        return fake(argv, **kwargs)

    shim = types.SimpleNamespace(**{n: getattr(subprocess, n) for n in dir(subprocess) if not n.startswith("__")})
    shim.Popen = recording
    monkeypatch.setattr(bridge.process, "subprocess", shim)
    return seen


def one_step(tmp_path: Path, store: SchemaStore, fp, answer, returncode: int = 0, callback=None, max_attempts=1):
    """Run a one-step manifest whose worker is faked: `answer` on stdout.

    `callback()` runs after the runner's scratch cleanup, before the attempt: it may create the attempt's files
    (a faked process cannot write its stdout from a callback while the runner drains it).
    """
    doc = fixture_manifest([{"id": "s", "worker": "fixture", "args": {"prompt": "ünïcode"}}],
                           retry={"max_attempts": max_attempts, "backoff_s": [0]})
    m = write_manifest(tmp_path, doc)
    fp.register(PREFIX + ["--describe"], stdout=DESCRIBE)
    for _ in range(max_attempts):
        fp.register(PREFIX + ["--input", fp.any()], stdout=answer, returncode=returncode)
    runner = Runner(load(m, store), RunOptions(), schemas=store, console=io.StringIO())
    if callback is not None:
        clean = runner._clean_scratch

        def clean_then_prepare() -> None:
            clean()
            staging(tmp_path).mkdir(parents=True, exist_ok=True)
            callback()

        runner._clean_scratch = clean_then_prepare
    code = runner.run()
    return code, runner.trace["s"]


def test_argv_env_and_args_file(tmp_path, store, fp, popen_kwargs):
    out = staging(tmp_path) / "o.txt"
    doc = envelope(result={"files": {"o": str(out)}},
                   outputs=[{"path": str(out), "sha256": hashlib.sha256(b"data").hexdigest(), "bytes": 4,
                             "media_type": "text/plain"}])

    code, tr = one_step(tmp_path, store, fp, json.dumps(doc) + "\n", callback=lambda: out.write_bytes(b"data"))
    assert code == EXIT_OK, tr
    calls = [list(c) for c in fp.calls]
    assert calls[0] == PREFIX + ["--describe"]
    argv = calls[1]
    assert argv[:2] == PREFIX and argv[2] == "--input" and argv[3].endswith("args.json")
    args = json.loads(Path(argv[3]).read_text("utf-8"))
    assert len(popen_kwargs) == 2
    kwargs = popen_kwargs[1]
    assert kwargs.get("shell") in (None, False) and kwargs["cwd"] == str(tmp_path)
    env = kwargs["env"]
    assert env["PYTHONUTF8"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    assert kwargs.get("start_new_session") is True or sys.platform == "win32"  # the runner owns the worker's tree
    assert kwargs["stdin"] is not None  # DEVNULL: a worker never waits on the runner's stdin
    assert args["prompt"] == "ünïcode" and args["output_dir"] == str(staging(tmp_path))
    assert fp.call_count(PREFIX + ["--describe"]) == 1
    committed = tmp_path / "t.work" / "steps" / "s" / "o.txt"
    assert committed.read_bytes() == b"data"
    rec = json.loads((tmp_path / "t.work" / "trace.json").read_text())["steps"]["s"]
    assert rec["attempts"][0]["peak_rss_mb"] == 12.5  # from the envelope's metrics


@pytest.mark.parametrize(("stdout", "code", "kind", "needle"), [
    (json.dumps(envelope(result={})) + "\n" + json.dumps(envelope(result={})), 0, "protocol", "more than one JSON"),
    ("garbage, not json", 0, "protocol", "not JSON"),
    ("", 0, "protocol", "nothing on stdout"),
    ("", 9, "crash", "exit code 9"),
    ("Traceback (most recent call last): ...", -11, "crash", "killed by signal 11"),
    (json.dumps({"success": True}), 0, "protocol", "violates envelope.schema.json"),
    (json.dumps(envelope(result={"x": 1})), 3, "protocol", "answered success but exited"),
    (json.dumps(envelope(success=False, error={"kind": "transient", "message": "busy", "retryable": True,
                                               "details": {}})), 5, "transient", "busy"),
])
def test_malformed_or_failed_answers(tmp_path, store, fp, stdout, code, kind, needle):
    rc, tr = one_step(tmp_path, store, fp, stdout, returncode=code)
    assert rc == EXIT_STEP_FAILED
    assert tr.status == "failed" and tr.error["kind"] == kind and needle in tr.error["message"], tr.error
    assert not (tmp_path / "t.work" / "steps" / "s").exists()


def test_success_with_missing_output_file(tmp_path, store, fp):
    out = staging(tmp_path) / "never.txt"
    doc = envelope(result={}, outputs=[{"path": str(out), "sha256": "0" * 64, "bytes": 1, "media_type": "x/y"}])
    rc, tr = one_step(tmp_path, store, fp, json.dumps(doc))
    assert rc == EXIT_STEP_FAILED and tr.error["kind"] == "output_invalid" and "missing" in tr.error["message"]


def test_success_with_sha_mismatch_and_output_outside(tmp_path, store, fp):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("z")

    out = staging(tmp_path) / "o.txt"
    doc = envelope(result={}, outputs=[
        {"path": str(out), "sha256": "1" * 64, "bytes": 3, "media_type": "text/plain"},
        {"path": str(outside), "sha256": hashlib.sha256(b"z").hexdigest(), "bytes": 1, "media_type": "text/plain"},
    ])
    rc, tr = one_step(tmp_path, store, fp, json.dumps(doc), callback=lambda: out.write_text("abc"))
    assert rc == EXIT_STEP_FAILED and tr.error["kind"] == "output_invalid"
    assert "differs from the reported" in tr.error["message"] and "outside the step's output_dir" in tr.error["message"]


def test_crash_is_retried_and_protocol_errors_are_not(tmp_path, store, fp):
    rc, tr = one_step(tmp_path, store, fp, "", returncode=-9, max_attempts=3)
    assert rc == EXIT_STEP_FAILED and [a["error_kind"] for a in tr.attempts] == ["crash"] * 3
    (tmp_path / "p").mkdir()
    rc, tr = one_step(tmp_path / "p", store, fp, "{}", returncode=0, max_attempts=3)
    assert [a["error_kind"] for a in tr.attempts] == ["protocol"]


def test_describe_failure_fails_the_steps_of_that_worker(tmp_path, store, fp):
    doc = fixture_manifest([{"id": "s", "worker": "fixture"}])
    m = write_manifest(tmp_path, doc)
    fp.register(PREFIX + ["--describe"], stdout="oops", returncode=1)
    runner = Runner(load(m, store), RunOptions(), schemas=store, console=io.StringIO())
    assert runner.run() == EXIT_STEP_FAILED
    assert runner.trace["s"].error["kind"] == "worker_unavailable"


def test_prefix_rewrite_is_exact():
    old, new = "/w/.bridge/staging/a-1-x", "/w/steps/a"
    value = {"p": old + "/f.txt", "same": old, "other": old + "-sibling/f", "list": [old + "/d/e"], "n": 3}
    assert rewrite_prefix(value, old, new) == {"p": new + "/f.txt", "same": new, "other": old + "-sibling/f",
                                                "list": [new + "/d/e"], "n": 3}
