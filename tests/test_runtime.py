"""The shared worker runtime, exercised through the test-only fixture worker as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from workers.contract import CONTRACT_VERSION, EXIT_CODES, ErrorKind

from conftest import FIXTURE_WORKER, REPO

ENVELOPE_SCHEMA = json.loads((REPO / "schemas" / "envelope.schema.json").read_text("utf-8"))
SERVE_SCHEMA = json.loads((REPO / "schemas" / "serve.schema.json").read_text("utf-8"))
DESCRIBE_SCHEMA = json.loads((REPO / "schemas" / "describe.schema.json").read_text("utf-8"))


def run_fixture(tmp_path: Path, args: dict | bytes | None, *extra: str, env: dict | None = None, input_bytes: bytes | None = None):
    """Run the fixture worker one-shot; return (exit code, the single stdout document, stderr text)."""
    argv = [sys.executable, str(FIXTURE_WORKER)]
    if args is not None:
        args_file = tmp_path / "args.json"
        args_file.write_bytes(args if isinstance(args, bytes) else json.dumps(args).encode("utf-8"))
        argv += ["--input", str(args_file)]
    argv += list(extra)
    proc = subprocess.run(argv, capture_output=True, env={**os.environ, **(env or {})}, input=input_bytes, timeout=60)
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON line, got {lines!r}; stderr: {proc.stderr.decode()}"
    return proc.returncode, json.loads(lines[0]), proc.stderr.decode("utf-8", "replace")


def assert_envelope(doc: dict) -> None:
    jsonschema.Draft202012Validator(ENVELOPE_SCHEMA).validate(doc)


def test_noise_on_stdout_from_python_c_and_children_goes_to_stderr(tmp_path):
    code, doc, stderr = run_fixture(tmp_path, {"output_dir": str(tmp_path / "out"), "mode": "noise"})
    assert code == 0 and doc["success"] is True
    assert_envelope(doc)
    for noise in ("noise from python print", "noise from sys.stdout", "noise from C puts", "noise from a child process"):
        assert noise in stderr
    progress = [json.loads(line) for line in stderr.splitlines() if line.startswith('{"event":"progress"')]
    assert [p["fraction"] for p in progress] == [0.1, 1.0]


def test_success_envelope_lists_committed_outputs_with_hashes(tmp_path):
    out = tmp_path / "out"
    code, doc, _ = run_fixture(tmp_path, {"output_dir": str(out), "outputs": {"a.txt": "héllo ✓", "b.json": "{}"}})
    assert code == 0
    assert_envelope(doc)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.json"]  # no staging leftovers
    by_name = {Path(o["path"]).name: o for o in doc["outputs"]}
    import hashlib

    data = (out / "a.txt").read_bytes()
    assert by_name["a.txt"] == {"path": str(out / "a.txt"), "sha256": hashlib.sha256(data).hexdigest(),
                                "bytes": len(data), "media_type": "text/plain"}
    assert by_name["b.json"]["media_type"] == "application/json"
    assert doc["result"]["files"]["a.txt"] == str(out / "a.txt")
    m = doc["metrics"]
    assert m["load_s"] >= 0 and m["run_s"] >= 0 and m["peak_rss_mb"] > 10 and m["device"] == "cpu"


@pytest.mark.parametrize("kind", ["invalid_input", "model_unavailable", "resource", "transient", "external"])
def test_each_error_kind_has_its_exit_code(tmp_path, kind):
    code, doc, _ = run_fixture(tmp_path, {"output_dir": str(tmp_path / "out"), "mode": "fail", "kind": kind,
                                          "outputs": {"x.txt": "never committed"}})
    assert_envelope(doc)
    assert code == EXIT_CODES[ErrorKind(kind)]
    assert doc["success"] is False and doc["result"] is None
    assert doc["error"]["kind"] == kind
    assert doc["error"]["retryable"] is (kind in ("resource", "transient", "external"))
    assert not (tmp_path / "out").exists()  # created for the job, removed on failure


def test_exit_codes_are_distinct_and_documented():
    codes = list(EXIT_CODES.values())
    assert len(set(codes)) == len(codes) == len(ErrorKind)
    assert EXIT_CODES[ErrorKind.invalid_input] == 2 and 0 not in codes and 1 not in codes
    readme = (REPO / "docs" / "contract.md").read_text("utf-8")
    for kind, code in EXIT_CODES.items():
        assert f"| `{kind.value}` | {code} |" in readme


def test_unexpected_exception_is_internal_with_traceback_only_in_details(tmp_path):
    code, doc, _ = run_fixture(tmp_path, {"output_dir": str(tmp_path / "out"), "mode": "raise"})
    assert code == EXIT_CODES[ErrorKind.internal] == 7
    err = doc["error"]
    assert err["kind"] == "internal" and err["retryable"] is False
    assert err["message"] == "Unexpected ValueError while running the job: fixture bug"
    assert "Traceback" in err["details"]["traceback"] and "Traceback" not in err["message"]


def test_invalid_args_rejected_before_heavy_imports_with_json_paths(tmp_path):
    args = {"output_dir": str(tmp_path / "out"), "mode": "explode", "sleep_s": -1, "typo_field": 1}
    code, doc, stderr = run_fixture(tmp_path, args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert code == 2
    assert_envelope(doc)
    assert doc["error"]["kind"] == "invalid_input" and doc["error"]["retryable"] is False
    paths = {e["path"] for e in doc["error"]["details"]["field_errors"]}
    assert paths == {"$.mode", "$.sleep_s", "$.typo_field"}
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    assert "pydantic" in imported  # the import profile really was captured
    assert "heavy_module" not in imported and "torch" not in imported
    assert not (tmp_path / "out").exists()


def test_unsupported_contract_major_is_invalid_input(tmp_path):
    code, doc, _ = run_fixture(tmp_path, {"contract_version": "2.0.0", "output_dir": str(tmp_path / "o")})
    assert code == 2 and f"speaks contract {CONTRACT_VERSION} (major 1)" in doc["error"]["message"]
    assert doc["error"]["details"]["field_errors"][0]["path"] == "$.contract_version"
    code, doc, _ = run_fixture(tmp_path, {"contract_version": "1.7.3", "output_dir": str(tmp_path / "o")})
    assert code == 0  # a newer minor of the same major is accepted


@pytest.mark.parametrize("payload, expected", [
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "args must be a JSON object"),
    (b"\xff\xfe{\x00}\x00", "is UTF-16; write it as UTF-8"),
    (b"{\"echo\": \"caf\xe9\"}", "is not valid UTF-8 (byte 13)"),
    (b"", "is empty"),
    (b" \n\t", "is empty"),
])
def test_unparseable_args_file_is_invalid_input_with_a_field_error(tmp_path, payload, expected):
    code, doc, _ = run_fixture(tmp_path, payload)
    assert_envelope(doc)
    assert code == 2 and expected in doc["error"]["message"]
    assert [e["path"] for e in doc["error"]["details"]["field_errors"]] == ["$"]


def test_utf8_bom_args_and_non_ascii_round_trip(tmp_path):
    args = {"output_dir": str(tmp_path / "výstup ✓"), "echo": "Žluťoučký kůň 🐎 — 字幕"}
    code, doc, _ = run_fixture(tmp_path, b"\xef\xbb\xbf" + json.dumps(args, ensure_ascii=False).encode("utf-8"),
                               env={"PYTHONIOENCODING": "cp1252", "LC_ALL": "C"})
    assert code == 0 and doc["result"]["echo"] == args["echo"]


def test_usage_errors_still_answer_with_one_json_envelope(tmp_path):
    code, doc, _ = run_fixture(tmp_path, None, "--bogus")
    assert code == 2 and doc["error"]["kind"] == "invalid_input" and "usage" in doc["error"]["message"]
    code, doc, _ = run_fixture(tmp_path, None, "--input", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read args file" in doc["error"]["message"]


def test_args_from_stdin_and_output_copy_written_atomically(tmp_path):
    result_file = tmp_path / "res" / "result.json"
    code, doc, _ = run_fixture(tmp_path, None, "--input", "-", "--output", str(result_file),
                               input_bytes=json.dumps({"output_dir": str(tmp_path / "o")}).encode())
    assert code == 0
    assert json.loads(result_file.read_text("utf-8")) == doc
    assert [p.name for p in result_file.parent.iterdir()] == ["result.json"]


def test_output_names_escaping_output_dir_are_invalid_input(tmp_path):
    code, doc, _ = run_fixture(tmp_path, {"output_dir": str(tmp_path / "o"), "outputs": {"../escape.txt": "x"}})
    assert code == 2 and "escapes the output directory" in doc["error"]["message"]
    assert not (tmp_path / "escape.txt").exists()


def test_allowed_roots_confine_output_dir(tmp_path):
    env = {"STORYBRIDGE_ALLOWED_ROOTS": str(tmp_path / "allowed")}
    code, doc, _ = run_fixture(tmp_path, {"output_dir": str(tmp_path / "elsewhere")}, env=env)
    assert code == 2 and "outside the allowed roots" in doc["error"]["message"]
    code, _, _ = run_fixture(tmp_path, {"output_dir": str(tmp_path / "allowed" / "o")}, env=env)
    assert code == 0


def test_schema_and_describe_load_no_model(tmp_path):
    code, doc, stderr = run_fixture(tmp_path, None, "--schema", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert code == 0 and doc["worker"] == "fixture"
    assert "mode" in doc["args"]["properties"] and "invocation" in doc["result"]["properties"]
    assert "heavy_module" not in stderr
    code, doc, _ = run_fixture(tmp_path, None, "--describe")
    assert code == 0
    assert doc["name"] == "fixture" and doc["version"] == "1.0.0" and doc["contract_version"] == CONTRACT_VERSION
    jsonschema.Draft202012Validator(DESCRIBE_SCHEMA).validate(doc)
    assert "cpu" in doc["devices"]


def test_serve_handles_good_and_bad_requests_and_keeps_the_model(tmp_path):
    requests = [
        {"op": "ping", "id": "p0"},
        {"id": 1, "args": {"output_dir": str(tmp_path / "r1"), "outputs": {"a.txt": "one"}}},
        "this is not json",
        {"id": 2, "args": {"output_dir": str(tmp_path / "r2"), "beam": 3}},
        {"id": 3, "args": {"output_dir": str(tmp_path / "r3"), "mode": "fail", "kind": "resource"}},
        {"id": 4, "op": "dance"},
        {"id": 5, "args": {"output_dir": str(tmp_path / "r5"), "outputs": {"b.txt": "five"}}},
        {"op": "ping", "id": "p1"},
        {"op": "shutdown", "id": "bye"},
        {"id": 6, "args": {"output_dir": str(tmp_path / "never")}},  # after shutdown: never read
    ]
    stdin = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n"
    proc = subprocess.run([sys.executable, str(FIXTURE_WORKER), "--serve"], input=stdin.encode(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    validator = jsonschema.Draft202012Validator(SERVE_SCHEMA)
    for line in lines:
        validator.validate(line)
    events = [(m["event"], m.get("id")) for m in lines]
    assert events == [("ready", None), ("pong", "p0"), ("result", 1), ("result", None), ("result", 2),
                      ("result", 3), ("result", 4), ("result", 5), ("pong", "p1"), ("shutdown", "bye")]
    by_id = {m.get("id"): m for m in lines if m["event"] == "result" and m.get("id") is not None}
    assert by_id[1]["success"] and by_id[5]["success"]
    assert by_id[1]["metrics"]["model_cache_hit"] is False and by_id[5]["metrics"]["model_cache_hit"] is True
    assert by_id[5]["metrics"]["model_loads"] == 1  # one load across the whole session
    assert by_id[2]["error"]["kind"] == "invalid_input" and by_id[2]["error"]["details"]["field_errors"][0]["path"] == "$.beam"
    assert by_id[3]["error"]["kind"] == "resource" and by_id[3]["error"]["retryable"] is True
    assert by_id[4]["error"]["kind"] == "invalid_input"
    assert lines[3]["error"]["kind"] == "invalid_input"  # the malformed line
    assert lines[-1]["event"] == "shutdown" and not (tmp_path / "never").exists()
    assert (tmp_path / "r5" / "b.txt").read_text() == "five"


def test_serve_exits_cleanly_at_end_of_input(tmp_path):
    proc = subprocess.run([sys.executable, str(FIXTURE_WORKER), "--serve"], input=b"", capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert [json.loads(x)["event"] for x in proc.stdout.decode().splitlines()] == ["ready"]


def test_sigterm_mid_job_still_answers_and_leaves_no_partial_output(tmp_path):
    import signal
    import time

    args_file = tmp_path / "args.json"
    count_file = tmp_path / "count"
    args_file.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "mode": "hang", "sleep_s": 30,
                                     "count_file": str(count_file)}))
    proc = subprocess.Popen([sys.executable, str(FIXTURE_WORKER), "--input", str(args_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not count_file.exists() and time.monotonic() < deadline:  # the job is running once it counted itself
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=20)
    doc = json.loads(stdout)
    assert proc.returncode == EXIT_CODES[ErrorKind.transient]
    assert doc["error"]["kind"] == "transient" and doc["error"]["retryable"] is True
    assert not (tmp_path / "out").exists()
