"""How a worker fails, as a host sees it: bad output_dir, out of memory, signals, a missing extra, describe.

The runtime gives every worker these behaviours; each is tested on the real process (the fixture worker, and
every registered worker where the case applies).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from worker_process import FIXTURE, minimal_document, paths, run, whisper_args

from conftest import FIXTURE_WORKER, REPO

SERVE_SCHEMA = json.loads((REPO / "schemas" / "serve.schema.json").read_text("utf-8"))
MEMORY_LIMITED = REPO / "tests" / "fixtures" / "memory_limited.py"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")


# --- a bad output_dir is the user's input, not a bug -------------------------------------------------------

@pytest.mark.parametrize("layout", ["is_a_file", "under_a_file", "nul_byte", "name_too_long"])
def test_unusable_output_dir_is_invalid_input(tmp_path, layout):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    output_dir = {"is_a_file": str(blocker), "under_a_file": str(blocker / "sub" / "out"),
                  "nul_byte": str(tmp_path / "o\u0000ut"), "name_too_long": str(tmp_path / ("a" * 300))}[layout]
    code, doc = run(FIXTURE, tmp_path, {"output_dir": str(output_dir), "outputs": {"a.txt": "x"}})
    assert code == 2 and doc["error"]["kind"] == "invalid_input" and paths(doc) == {"$.output_dir"}
    assert "traceback" not in doc["error"]["details"]
    assert blocker.read_text() == "a file"


def test_a_full_disk_while_creating_the_stage_is_resource(tmp_path, monkeypatch):
    import errno

    from workers.contract import ErrorKind
    from workers.runtime.errors import WorkerError
    from workers.runtime.outputs import OutputStage

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(WorkerError) as caught:
        OutputStage(tmp_path / "out")
    assert caught.value.kind == ErrorKind.resource and caught.value.retryable


# --- allocation failures are `resource`, at load and at run -------------------------------------------------

@linux_only
@pytest.mark.parametrize("stage", ["load", "run"])
def test_fixture_out_of_memory_is_resource(tmp_path, stage):
    argv = [sys.executable, str(MEMORY_LIMITED), "--stage", stage, "--headroom-mb", "64",
            "--worker", f"{FIXTURE_WORKER}:FixtureWorker", "--"]
    code, doc = run(argv, tmp_path, {"output_dir": str(tmp_path / "out"), "mode": "alloc", "alloc_mb": 1024,
                                     "alloc_stage": stage})
    assert code == 4 and doc["error"]["kind"] == "resource" and doc["error"]["retryable"] is True
    assert doc["error"]["details"]["stage"] == ("loading the model" if stage == "load" else "running the job")


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("stage, headroom_mb", [("load", 32), ("load", 256), ("run", 128)])
def test_whisper_out_of_memory_is_resource_not_model_unavailable(tmp_path, stage, headroom_mb):
    """32 MiB: a shared library fails to map while importing; 256 MiB: MKL's malloc fails inside CTranslate2
    (which used to be reported as model_unavailable); run: CTranslate2 fails mid-transcription."""
    argv = [sys.executable, str(MEMORY_LIMITED), "--stage", stage, "--headroom-mb", str(headroom_mb),
            "--worker", "workers.whisper.worker:WhisperWorker", "--"]
    code, doc = run(argv, tmp_path, whisper_args(tmp_path, device="cpu"))
    assert code == 4 and doc["error"]["kind"] == "resource", doc["error"]
    assert not (tmp_path / "out").exists()


# --- signals -------------------------------------------------------------------------------------------------

def _start_hanging(tmp_path: Path, output_dir: Path, name: str) -> tuple[subprocess.Popen, Path]:
    count = tmp_path / f"{name}.count"
    (tmp_path / f"{name}.json").write_text(json.dumps({
        "output_dir": str(output_dir), "mode": "hang", "sleep_s": 60, "count_file": str(count),
        "outputs": {}}), encoding="utf-8")
    proc = subprocess.Popen([*FIXTURE, "--input", str(tmp_path / f"{name}.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not count.exists() and time.monotonic() < deadline:  # running once it counted itself
        time.sleep(0.05)
    assert count.exists(), "the fixture never started its job"
    return proc, count


def _stages(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".partial-"))


def test_sigterm_answers_transient_marked_cancelled(tmp_path):
    proc, _ = _start_hanging(tmp_path, tmp_path / "out", "a")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    doc = json.loads(out)
    assert proc.returncode == 5 and doc["error"]["kind"] == "transient" and doc["error"]["retryable"] is True
    assert doc["error"]["details"] == {"cancelled": True, "signal": "SIGTERM"}


def test_a_stage_left_by_sigkill_is_removed_by_the_next_run_but_a_live_one_is_kept(tmp_path):
    out = tmp_path / "out"
    killed, _ = _start_hanging(tmp_path, out, "killed")
    killed.kill()
    killed.wait(timeout=30)
    left_behind = _stages(out)
    assert len(left_behind) == 1  # SIGKILL gives no chance to clean up
    live, _ = _start_hanging(tmp_path, out, "live")
    try:
        live_stage = set(_stages(out)) - set(left_behind)
        code, doc = run(FIXTURE, tmp_path, {"output_dir": str(out), "outputs": {"done.txt": "ok"}})
        assert code == 0
        assert _stages(out) == sorted(live_stage)  # the dead worker's stage is gone, the live one untouched
        assert (out / "done.txt").read_text() == "ok"
    finally:
        live.kill()
        live.wait(timeout=30)


def _serve(tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([*FIXTURE, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert json.loads(proc.stdout.readline())["event"] == "ready"
    return proc


def test_serve_sigterm_answers_the_job_in_flight_then_exits_5(tmp_path):
    proc = _serve(tmp_path)
    count = tmp_path / "count"
    request = {"id": "job-1", "args": {"output_dir": str(tmp_path / "out"), "mode": "hang", "sleep_s": 60,
                                       "count_file": str(count), "outputs": {}}}
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not count.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    for line in lines:
        jsonschema.Draft202012Validator(SERVE_SCHEMA).validate(line)
    assert [(m["event"], m.get("id")) for m in lines] == [("result", "job-1"), ("shutdown", None)]
    assert lines[0]["error"]["kind"] == "transient" and lines[0]["error"]["details"]["cancelled"] is True
    assert lines[1]["reason"] == "signal"
    assert proc.returncode == 5
    assert not (tmp_path / "out").exists()


def test_serve_sigterm_while_idle_says_shutdown_and_exits_5(tmp_path):
    proc = _serve(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert [json.loads(line) for line in out.decode().splitlines()] == [
        {"event": "shutdown", "id": None, "reason": "signal"}]
    assert proc.returncode == 5


def test_serve_answers_a_ping_sent_during_a_job_after_that_job(tmp_path):
    requests = [{"id": "slow", "args": {"output_dir": str(tmp_path / "o"), "mode": "hang", "sleep_s": 0.5}},
                {"op": "ping", "id": "p"}, {"op": "shutdown", "id": "s"}]
    proc = subprocess.run([*FIXTURE, "--serve"], input="".join(json.dumps(r) + "\n" for r in requests).encode(),
                          capture_output=True, timeout=60)
    events = [(m["event"], m.get("id")) for m in map(json.loads, proc.stdout.decode().splitlines())]
    assert events == [("ready", None), ("result", "slow"), ("pong", "p"), ("shutdown", "s")]


# --- a missing extra names the pip command; describe stays light ------------------------------------------

def _worker_instance(name: str):
    import importlib

    from workers.runtime import Worker

    module = importlib.import_module(f"workers.{name}.worker")
    return next(obj() for obj in vars(module).values()
                if isinstance(obj, type) and issubclass(obj, Worker) and obj is not Worker and obj.name == name)


def _worker_cases() -> list[tuple[str, list[str], tuple[str, ...], str]]:
    from workers.contract.registry import WORKER_CONTRACT_MODULES

    cases = [("fixture", [str(FIXTURE_WORKER)], ("heavy_module",), "fixture")]
    for name in sorted(WORKER_CONTRACT_MODULES):
        worker = _worker_instance(name)
        cases.append((name, ["-m", f"workers.{name}"], worker.requires, worker.extra))
    return cases


WITHOUT_MODULES = REPO / "tests" / "fixtures" / "without_modules.py"


def _smallest_valid_args(name: str, tmp_path: Path) -> dict:
    """The simplest args document the worker's own schema accepts, with a real output_dir.

    The missing-extra check runs right after validation, so no input file has to exist."""
    if name == "fixture":
        return {"output_dir": str(tmp_path / "out")}
    schema = json.loads((REPO / "schemas" / f"{name}.args.schema.json").read_text("utf-8"))
    args = {**minimal_document(schema), "output_dir": str(tmp_path / "out")}
    jsonschema.Draft202012Validator(schema).validate(args)
    return args


@pytest.mark.parametrize("name, target, requires, extra", _worker_cases(), ids=[c[0] for c in _worker_cases()])
def test_a_missing_extra_is_model_unavailable_naming_the_install(tmp_path, name, target, requires, extra):
    assert requires and extra, f"worker {name} must declare `requires` and `extra`"
    args = _smallest_valid_args(name, tmp_path)
    for module in requires:
        argv = [sys.executable, str(WITHOUT_MODULES), module, *target]
        code, doc = run(argv, tmp_path, args)
        assert code == 3 and doc["error"]["kind"] == "model_unavailable", doc["error"]
        assert f"pip install 'storybridge[{extra}]'" in doc["error"]["message"]
        assert doc["error"]["details"]["missing_modules"] == [module]
    assert not (tmp_path / "out").exists()


def test_a_module_missing_at_import_time_is_model_unavailable_too(tmp_path):
    from workers.contract import ModelArgs
    from workers.runtime.cache import ModelCache
    from workers.runtime.engine import execute
    from workers.runtime.worker import Worker

    class Undeclared(Worker):  # imports a package it did not list in `requires`
        name, version, extra, Args, Result = "undeclared", "0", "undeclared", ModelArgs, ModelArgs

        def load(self, args, ctx):
            import storybridge_not_installed_xyz  # noqa: F401

        def run(self, model, args, ctx):  # pragma: no cover - never reached
            raise AssertionError

    envelope, code = execute(Undeclared(), {"output_dir": str(tmp_path / "o"), "model": "m"}, ModelCache())
    assert code == 3 and envelope.error.kind == "model_unavailable"
    assert "storybridge_not_installed_xyz" in envelope.error.message and "storybridge[undeclared]" in envelope.error.message


@pytest.mark.parametrize("name, target", [(c[0], c[1]) for c in _worker_cases()], ids=[c[0] for c in _worker_cases()])
def test_describe_imports_no_model_library(tmp_path, name, target):
    proc = subprocess.run([sys.executable, "-X", "importtime", *target, "--describe"], capture_output=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0
    described = json.loads(proc.stdout)
    assert described["name"] == name and described["devices"][0] == "cpu"
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
    assert "pydantic" in imported  # the profile was captured
    assert not imported & {"torch", "ctranslate2", "faster_whisper", "diffusers", "transformers", "heavy_module"}


def test_cuda_visible_devices_narrows_the_probe(monkeypatch):
    from workers.runtime import devices

    monkeypatch.setattr(devices, "_nvml_count", lambda: 4)
    for mask, expected in [(None, 4), ("", 0), ("1,3", 2), ("0,7,1", 1), ("GPU-abc", 1), ("-1", 0)]:
        if mask is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
        assert devices.cuda_devices() == [f"cuda:{i}" for i in range(expected)], mask


def test_a_warm_cache_hit_reports_the_device_of_the_loaded_model(tmp_path):
    requests = [{"id": i, "args": {"output_dir": str(tmp_path / f"o{i}")}} for i in (1, 2)]
    proc = subprocess.run([*FIXTURE, "--serve"], input="".join(json.dumps(r) + "\n" for r in requests).encode(),
                          capture_output=True, timeout=60)
    results = [m for m in map(json.loads, proc.stdout.decode().splitlines()) if m["event"] == "result"]
    assert [r["metrics"]["model_cache_hit"] for r in results] == [False, True]
    assert [r["metrics"]["device"] for r in results] == ["cpu", "cpu"]


SIGNAL_DURING = REPO / "tests" / "fixtures" / "signal_during.py"


@pytest.mark.parametrize("moment", ["commit", "answer"])
def test_a_signal_while_committing_or_answering_waits_and_the_true_answer_stands(tmp_path, moment):
    out = tmp_path / "out"
    argv = [sys.executable, str(SIGNAL_DURING), moment, str(FIXTURE_WORKER)]
    code, doc = run(argv, tmp_path, {"output_dir": str(out), "outputs": {"a.txt": "new a", "b.txt": "new b"}})
    assert code == 0 and doc["success"] is True  # not "cancelled, no output was kept"
    assert (out / "a.txt").read_text() == "new a" and (out / "b.txt").read_text() == "new b"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]


def test_serve_answers_a_job_whose_commit_was_signalled_then_stops(tmp_path):
    request = {"id": "j", "args": {"output_dir": str(tmp_path / "out"), "outputs": {"a.txt": "x", "b.txt": "y"}}}
    proc = subprocess.run([sys.executable, str(SIGNAL_DURING), "commit", str(FIXTURE_WORKER), "--serve"],
                          input=(json.dumps(request) + "\n").encode(), capture_output=True, timeout=60)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(m["event"], m.get("id")) for m in lines] == [("ready", None), ("result", "j"), ("shutdown", None)]
    assert lines[1]["success"] is True and lines[2]["reason"] == "signal"
    assert proc.returncode == 5
