"""Worker processes and the protocol around them (issue 9: D1, D8, D9, `--describe`, the stdout cap,
`step_failed` fields)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from bridge_helpers import (
    BARE,
    REPO,
    bare_manifest,
    bridge_env,
    events,
    lines,
    run_runner,
    schema_dir,
    trace,
    wait_for,
    write_manifest,
)

from bridge.process import MAX_STDOUT_BYTES
from bridge.runner import EXIT_OK, EXIT_STEP_FAILED


@pytest.fixture
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("closes_stdio", [False, True], ids=["daemon_holds_stdout", "daemon_closes_stdio"])
def test_worker_that_leaves_a_daemon_keeps_its_answer_and_the_daemon_is_killed(tmp_path, schemas, closes_stdio):
    pid_file = tmp_path / "daemon.pid"
    args = {"mode": "daemon", "pid_file": str(pid_file), "daemon_closes_stdio": closes_stdio,
            # A daemon holding stdout is found through the pipe it holds, however fast the worker exits; one
            # that let go of stdio is found as a descendant seen while the worker ran.
            "linger_s": 0.6 if closes_stdio else 0, "outputs": {"o": "answer kept"}}
    m = write_manifest(tmp_path, bare_manifest([{"id": "d", "worker": "bare", "args": args}]))
    started = time.monotonic()
    code, out, _ = run_runner(m, schemas)
    daemon = int(pid_file.read_text())
    try:
        assert code == EXIT_OK, out
        assert (tmp_path / "t.work" / "steps" / "d" / "o").read_text() == "answer kept"
        assert time.monotonic() - started < 15  # the daemon sleeps 120 s: the runner did not wait for it
        assert wait_for(lambda: gone(daemon), 5), "the daemonised grandchild outlived its step"
    finally:
        if not gone(daemon):
            os.kill(daemon, signal.SIGKILL)


def test_stdout_over_the_cap_names_the_cap(tmp_path, schemas):
    doc = bare_manifest([{"id": "flood", "worker": "bare", "args": {"mode": "flood",
                                                                    "flood_bytes": MAX_STDOUT_BYTES + (1 << 20)}}])
    m = write_manifest(tmp_path, doc)
    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_STEP_FAILED
    error = trace(tmp_path / "t.work")["steps"]["flood"]["error"]
    assert error["kind"] == "protocol" and "64 MiB" in error["message"], error
    assert "Unterminated" not in error["message"]


def test_describe_honours_the_steps_timeout(tmp_path, schemas):
    doc = bare_manifest([{"id": "a", "worker": "slow", "args": {}, "timeout_s": 1}],
                        workers={"slow": [sys.executable, BARE, "--describe-sleep", "20"]})
    m = write_manifest(tmp_path, doc)
    started = time.monotonic()
    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_STEP_FAILED
    assert time.monotonic() - started < 10  # not the fixed 120 s, and not the 20 s the worker takes
    error = trace(tmp_path / "t.work")["steps"]["a"]["error"]
    assert error["kind"] == "worker_unavailable" and "within 1 s" in error["message"], error


def test_step_failed_for_an_unavailable_worker_has_every_documented_field(tmp_path, schemas):
    doc = bare_manifest([{"id": "a", "worker": "ghost", "args": {}}],
                        workers={"ghost": [str(tmp_path / "no-such-worker")]})
    m = write_manifest(tmp_path, doc)
    assert run_runner(m, schemas)[0] == EXIT_STEP_FAILED
    [failed] = [e for e in events(tmp_path / "t.work") if e["event"] == "step_failed"]
    for field in ("step", "kind", "message", "retryable", "exit_code", "why", "optional"):
        assert field in failed, field
    assert failed["kind"] == "worker_unavailable" and failed["retryable"] is False
    assert failed["why"] == "'worker_unavailable' is not retried"


@pytest.mark.parametrize("program", ["./w.py", "sub/w.py"])
def test_relative_worker_path_is_the_same_worker_from_any_cwd(tmp_path, schemas, monkeypatch, program):
    script = tmp_path / program
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport os, sys\nos.execv(sys.executable, "
                      f"[sys.executable, {BARE!r}, *sys.argv[1:]])\n")
    script.chmod(0o755)
    count = tmp_path / "count"
    doc = bare_manifest([{"id": "a", "worker": "w", "args": {"count_file": str(count)},
                          "ignore_input_files": ["count_file"]}], workers={"w": [program]})
    m = write_manifest(tmp_path, doc)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    monkeypatch.chdir(tmp_path)
    assert run_runner(m, schemas)[0] == EXIT_OK
    monkeypatch.chdir(elsewhere)
    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK, out
    assert "skip    a: up to date" in out and lines(count) == 1


@pytest.mark.slow
def test_worker_of_a_runner_killed_before_prctl_exits_by_itself(tmp_path, schemas):
    """D9: the runner dies between fork and PR_SET_PDEATHSIG; the child sees its parent is gone and exits.

    A test-only hook pauses every spawned child before prctl, which makes the race deterministic.
    """
    count = tmp_path / "count"
    doc = bare_manifest([{"id": "a", "worker": "bare", "args": {"mode": "hang", "sleep_s": 60,
                                                                "count_file": str(count)},
                          "ignore_input_files": ["count_file"]}])
    m = write_manifest(tmp_path, doc)
    env = {**bridge_env(schemas), "STORYBRIDGE_TEST_SPAWN_PAUSE_S": "1.5"}
    runner = subprocess.Popen([sys.executable, "-m", "bridge", "run", str(m)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    try:
        work = tmp_path / "t.work"
        assert wait_for(lambda: any(e["event"] == "attempt_start" for e in events(work)), 30)
        assert wait_for(lambda: children.extend(psutil.Process(runner.pid).children()) or children, 5)
        os.kill(runner.pid, signal.SIGKILL)  # the child is still paused before prctl
        runner.wait(10)
        assert wait_for(lambda: all(gone(c.pid) for c in children), 10), "the worker outlived its runner"
        assert lines(count) == 0  # it exited before exec: the worker never ran
    finally:
        if runner.poll() is None:
            runner.kill()
        for child in children:
            if not gone(child.pid):
                child.kill()


def test_resume_kills_a_leftover_worker_of_the_previous_run(tmp_path, schemas):
    """D9: a worker that outlived its runner (recorded in its attempt row) is killed on resume; a process
    that merely reuses a recorded pid (different start time) is left alone."""
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {"outputs": {"o": "x"}}}]))
    assert run_runner(m, schemas)[0] == EXIT_OK
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    leftover = subprocess.Popen(sleep, start_new_session=True)
    bystander = subprocess.Popen(sleep, start_new_session=True)
    try:
        db = sqlite3.connect(tmp_path / "t.work" / ".bridge" / "state.db")
        with db:
            for pid, started in ((leftover.pid, psutil.Process(leftover.pid).create_time()),
                                 (bystander.pid, psutil.Process(bystander.pid).create_time() - 1000)):
                db.execute("INSERT INTO attempts(run_id, step_id, attempt, cache_key, status, started_at, "
                           "worker_pid, worker_started) VALUES ('old', 'a', 9, 'k', 'running', 0, ?, ?)",
                           (pid, started))
        db.close()

        assert run_runner(m, schemas)[0] == EXIT_OK
        assert wait_for(lambda: gone(leftover.pid), 5)  # (reaped by the runner: it is this test's child)
        assert bystander.poll() is None
        abandoned = [e for e in events(tmp_path / "t.work") if e["event"] == "attempt_abandoned"]
        assert sorted(e["worker_stopped"] for e in abandoned) == [False, True]
    finally:
        for p in (leftover, bystander):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize(("value", "needle"), [
    ("[" * 5000 + "]" * 5000, "nested too deeply"),  # beyond the parser: used to be a RecursionError traceback
    ("[" * 150 + "]" * 150, "nested deeper than 100 levels"),
    ("NaN", "NaN/Infinity"),  # used to be committed, then crash a dependant's cache key
    ('"\\ud800"', "lone surrogate"),  # used to crash the commit (no UTF-8 encoder can write it)
], ids=["deep", "over_limit", "nan", "surrogate"])
def test_answer_that_cannot_be_stored_is_a_protocol_error(tmp_path, schemas, value, needle):
    worker = tmp_path / "odd.py"
    envelope = {"contract_version": "1.0.0", "worker": "odd", "worker_version": "1", "success": True,
                "result": {"d": "__VALUE__"}, "outputs": [], "metrics": None, "warnings": []}
    answer = json.dumps(envelope).replace('"__VALUE__"', value)
    worker.write_text("import sys\nif '--describe' in sys.argv:\n"
                      "    print('{\"name\": \"odd\", \"version\": \"1\", \"contract_version\": \"1.0.0\"}')\n"
                      f"else:\n    print({answer!r})\n")
    doc = bare_manifest([{"id": "a", "worker": "odd", "args": {}}], workers={"odd": [sys.executable, str(worker)]})
    m = write_manifest(tmp_path, doc)
    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_STEP_FAILED, out
    error = trace(tmp_path / "t.work")["steps"]["a"]["error"]
    assert error["kind"] == "protocol" and needle in error["message"], error
