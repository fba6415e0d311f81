"""Each disagreement between the contract and the workers that a host author found, as a test of the real process.

(The generated-document property is in test_contract_conformance.py; these are the concrete cases.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import FIXTURE_WORKER, REPO

WHISPER_SCHEMA = json.loads((REPO / "schemas" / "whisper.args.schema.json").read_text("utf-8"))
ENVELOPE_SCHEMA = json.loads((REPO / "schemas" / "envelope.schema.json").read_text("utf-8"))
SERVE_SCHEMA = json.loads((REPO / "schemas" / "serve.schema.json").read_text("utf-8"))
NARRATION = REPO / "examples" / "demo" / "narration.ogg"
MEMORY_LIMITED = REPO / "tests" / "fixtures" / "memory_limited.py"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")


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


# --- the worker used to accept what the schema forbids (lax coercion) --------------------------------------

@pytest.mark.parametrize("field, value", [
    ("beam_size", "5"), ("beam_size", True), ("word_timestamps", "yes"), ("vad_filter", 0), ("cpu_threads", "5"),
    ("allow_download", 1), ("vad_threshold", "0.5"), ("formats", "srt"), ("max_words_per_cue", 2.5),
])
def test_type_confused_values_are_refused_like_the_schema_does(tmp_path, field, value):
    args = whisper_args(tmp_path, **{field: value})
    assert not jsonschema.Draft202012Validator(WHISPER_SCHEMA).is_valid(args)
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 2 and doc["error"]["kind"] == "invalid_input"
    assert paths(doc) == {f"$.{field}"}
    assert not (tmp_path / "out").exists()


def test_an_integral_float_is_an_integer_for_both(tmp_path):
    args = whisper_args(tmp_path, beam_size=1.0, formats=["txt"])  # JSON Schema: 1.0 is an integer
    assert jsonschema.Draft202012Validator(WHISPER_SCHEMA).is_valid(args)
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 0, doc["error"]


# --- the schema used to allow what the worker rejects ------------------------------------------------------

@pytest.mark.parametrize("fields, path", [
    ({"formats": ["srt", "srt"]}, "$.formats"),
    ({"basename": "sub/name"}, "$.basename"),
    ({"basename": ".."}, "$.basename"),
    ({"basename": "name "}, "$.basename"),
    ({"language": "xx"}, "$.language"),
    ({"language": "EN"}, "$.language"),
    ({"device": "gpu"}, "$.device"),
    ({"device": "cpu\n"}, "$.device"),
    ({"device": "cpu", "compute_type": "float16"}, "$.compute_type"),
    ({"word_timestamps": False, "hallucination_silence_threshold_s": 2.0}, "$.word_timestamps"),
    ({"contract_version": "2.0.0"}, "$.contract_version"),
])
def test_rules_the_worker_enforces_are_in_the_schema(tmp_path, fields, path):
    args = whisper_args(tmp_path, **fields)
    host_errors = list(jsonschema.Draft202012Validator(WHISPER_SCHEMA).iter_errors(args))
    assert host_errors, f"the committed schema accepts {fields}"
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 2 and paths(doc) == {path}
    assert "pattern" not in doc["error"]["message"]  # a message a user can act on, not a regex


# --- field errors everywhere, and all of them at once ------------------------------------------------------

@pytest.mark.parametrize("case", ["missing_file", "directory", "empty_stdin", "bogus_flag", "no_mode", "stdin_garbage"])
def test_unreadable_args_and_cli_misuse_carry_field_errors(tmp_path, case):
    argv, stdin = {
        "missing_file": ([*FIXTURE, "--input", str(tmp_path / "nope.json")], None),
        "directory": ([*FIXTURE, "--input", str(tmp_path)], None),
        "empty_stdin": ([*FIXTURE, "--input", "-"], b""),
        "bogus_flag": ([*FIXTURE, "--bogus"], None),
        "no_mode": (FIXTURE, None),
        "stdin_garbage": ([*FIXTURE, "--input", "-"], b"\x00\x01"),
    }[case]
    code, doc = run(argv, tmp_path, stdin=stdin)
    assert code == 2 and doc["error"]["kind"] == "invalid_input"
    assert [e["path"] for e in doc["error"]["details"]["field_errors"]] == ["$"]


@pytest.mark.parametrize("depth, kind", [(60, None), (1020, "invalid_input")])
def test_deeply_nested_args_are_invalid_input_not_a_crash(tmp_path, depth, kind):
    nested = "[" * depth + "]" * depth
    raw = f'{{"output_dir": {json.dumps(str(tmp_path / "o"))}, "echo": {nested}}}'
    code, doc = run([*FIXTURE, "--input", "-"], tmp_path, stdin=raw.encode())
    assert (doc["error"] or {}).get("kind") == kind
    if kind:
        assert code == 2 and doc["error"]["details"]["field_errors"][0]["type"] == "depth"


def test_one_bad_field_does_not_hide_another(tmp_path):
    args = whisper_args(tmp_path, beam_size="5", language="klingon", typo=1)
    del args["audio_path"]
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 2
    assert paths(doc) == {"$.beam_size", "$.language", "$.typo", "$.audio_path"}


def test_every_path_outside_the_allowed_roots_is_reported(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    code, doc = run(WHISPER, tmp_path, whisper_args(tmp_path), env={"STORYBRIDGE_ALLOWED_ROOTS": str(allowed)})
    assert code == 2 and paths(doc) == {"$.audio_path", "$.output_dir"}
    assert "outside the allowed roots" in doc["error"]["message"]


# --- a bad output_dir is the user's input, not a bug -------------------------------------------------------

@pytest.mark.parametrize("layout", ["is_a_file", "under_a_file"])
def test_unusable_output_dir_is_invalid_input(tmp_path, layout):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    output_dir = blocker if layout == "is_a_file" else blocker / "sub" / "out"
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
