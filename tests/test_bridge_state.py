"""What state.db and trace.json say after a commit, a crash of the runner itself, and a large answer
(issue 9: D10, uncaught exceptions, state.db size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_helpers import REPO, bare_manifest, bridge_env, events, run_runner, schema_dir, trace, write_manifest
from bridge_helpers import state_rows as rows

from bridge.runner import EXIT_INTERRUPTED, EXIT_OK, EXIT_STEP_FAILED


@pytest.fixture
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def test_a_commit_and_its_attempt_are_one_transaction(tmp_path, schemas):
    """SIGKILL right after the commit's transaction: the attempt already says committed (never abandoned)."""
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {"outputs": {"o": "x"}}}]))
    driver = ("import os, signal, sys\n"
              "from bridge import state\n"
              "commit = state.StateDB.commit_step\n"
              "def commit_then_die(self, *args, **kwargs):\n"
              "    commit(self, *args, **kwargs)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "state.StateDB.commit_step = commit_then_die\n"
              "from bridge.cli import main\n"
              f"sys.exit(main(['run', {str(m)!r}]))\n")
    res = subprocess.run([sys.executable, "-c", driver], cwd=REPO, env=bridge_env(schemas), capture_output=True,
                         timeout=60)
    assert res.returncode == -9, res.stderr.decode()
    work = tmp_path / "t.work"
    assert rows(work, "SELECT status FROM steps WHERE step_id='a'") == [("committed",)]
    assert rows(work, "SELECT status FROM attempts WHERE step_id='a'") == [("committed",)]

    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK and "skip    a: up to date" in out
    assert rows(work, "SELECT status FROM attempts WHERE step_id='a'") == [("committed",)]
    assert not [e for e in events(work) if e["event"] == "attempt_abandoned"]


@pytest.mark.parametrize(("exc", "exit_code", "run_status", "step_status"), [
    (RuntimeError, EXIT_STEP_FAILED, "error", "failed"),
    (KeyboardInterrupt, EXIT_INTERRUPTED, "interrupted", "interrupted"),
])
def test_an_uncaught_exception_is_recorded_as_what_happened(tmp_path, schemas, monkeypatch, exc, exit_code,
                                                            run_status, step_status):
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {"outputs": {"o": "x"}}},
                                                {"id": "b", "worker": "bare", "args": {"outputs": {"o": "y"}}}]))

    def broken(*_args, **_kwargs):
        raise exc("injected")

    monkeypatch.setattr("bridge.state.StateDB.commit_step", broken)
    with pytest.raises(exc, match="injected"):
        run_runner(m, schemas)
    work = tmp_path / "t.work"
    t = trace(work)
    assert (t["exit_code"], t["status"]) == (exit_code, run_status)
    assert list(t["steps"]) == ["a"] and t["steps"]["a"]["status"] == step_status
    kind = "runner_error" if exc is RuntimeError else "interrupted"
    assert t["steps"]["a"]["error"]["kind"] == kind and "injected" in t["steps"]["a"]["error"]["message"]
    assert rows(work, "SELECT status, exit_code FROM runs") == [(run_status, exit_code)]
    assert rows(work, "SELECT status FROM steps") == [(step_status,)]
    assert rows(work, "SELECT status, error_kind FROM attempts") == [(step_status, kind)]
    end = [e for e in events(work) if e["event"] == "run_end"]
    assert [(e["status"], e["exit_code"]) for e in end] == [(run_status, exit_code)]
    assert not (work / ".bridge" / "lock").read_text()  # released

    monkeypatch.undo()
    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK, out
    assert f"run     a: previous {step_status}" in out


def test_a_large_answer_stays_out_of_the_database(tmp_path, schemas):
    blob = 2_000_000
    doc = bare_manifest([{"id": "big", "worker": "bare", "args": {"mode": "big", "blob_bytes": blob}},
                         {"id": "use", "worker": "bare", "args": {"outputs": {"o": "y"},
                                                                 "echo": "${steps.big.result.blob}"}}])
    m = write_manifest(tmp_path, doc)
    assert run_runner(m, schemas)[0] == EXIT_OK
    work = tmp_path / "t.work"
    db_bytes = sum(p.stat().st_size for p in (work / ".bridge").glob("state.db*"))
    assert db_bytes < 400_000, db_bytes  # the answers (2 MB each) live in files, the database holds references
    result_files = sorted((work / ".bridge" / "results").iterdir())
    assert len(result_files) == 2 and all(p.stat().st_size > blob for p in result_files)

    code, out, _ = run_runner(m, schemas, explain=True)  # resume reads the result back for the reference
    assert code == EXIT_OK and "skip    big: up to date" in out and "skip    use: up to date" in out

    big_file = next(p for p in result_files if p.name.startswith("big."))
    big_file.write_text(big_file.read_text().replace("xxx", "xyx", 1))  # same size, other content
    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK and "run     big: output corrupt: result file" in out, out
    assert "skip    use: up to date" in out  # the same bytes again: the dependant's key is unchanged
    assert len(list((work / ".bridge" / "results").iterdir())) == 2  # one file per committed result


def test_a_long_error_message_is_clipped_where_it_is_stored(tmp_path, schemas):
    worker = tmp_path / "loud.py"
    envelope = {"contract_version": "1.0.0", "worker": "loud", "worker_version": "1", "success": False,
                "result": None, "error": {"kind": "internal", "message": "E" * 3_000_000, "retryable": False},
                "outputs": [], "metrics": None, "warnings": []}
    worker.write_text("import sys\nif '--describe' in sys.argv:\n"
                      "    print('{\"name\": \"loud\", \"version\": \"1\", \"contract_version\": \"1.0.0\"}')\n"
                      f"else:\n    print({json.dumps(envelope)!r})\n")
    doc = bare_manifest([{"id": "a", "worker": "loud", "args": {}}], workers={"loud": [sys.executable, str(worker)]})
    m = write_manifest(tmp_path, doc)
    assert run_runner(m, schemas)[0] == EXIT_STEP_FAILED
    work = tmp_path / "t.work"
    message = trace(work)["steps"]["a"]["error"]["message"]
    assert message.startswith("EEEE") and len(message) < 20_000 and "cut" in message
    assert sum(p.stat().st_size for p in (work / ".bridge").glob("state.db*")) < 400_000


def test_a_hash_memo_without_inode_and_ctime_is_dropped_on_open(tmp_path):
    import sqlite3

    from bridge.state_format import open_format

    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    open_format(db)
    db.execute("DROP TABLE file_hashes")
    db.execute("CREATE TABLE file_hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
               "sha256 TEXT NOT NULL)")
    db.execute("INSERT INTO file_hashes VALUES ('/x', 1, 2, 'ab')")  # made by the runner before this memo key
    assert open_format(db) == 3
    assert db.execute("SELECT count(*) FROM file_hashes").fetchone() == (0,)
    assert {"ino", "ctime_ns"} <= {row[1] for row in db.execute("PRAGMA table_info(file_hashes)")}


def test_a_replaced_commit_takes_its_files_hash_memo_rows_along(tmp_path):
    schemas = schema_dir(tmp_path)
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {"outputs": {"o": "x"}}}]))
    assert run_runner(m, schemas)[0] == EXIT_OK
    work = tmp_path / "t.work"
    step_dir = str((work / "steps" / "a").resolve())
    db_path = work / ".bridge" / "state.db"
    import sqlite3

    db = sqlite3.connect(db_path)
    db.execute("INSERT INTO file_hashes VALUES (?, 1, 1, 1, 1, 'ab')", (step_dir + "/gone.bin",))
    db.execute("INSERT INTO file_hashes VALUES (?, 1, 1, 1, 1, 'ab')", (step_dir + "-other/kept.bin",))
    db.commit()
    db.close()
    assert run_runner(m, schemas, force={"a"})[0] == EXIT_OK
    paths = {p for (p,) in rows(work, "SELECT path FROM file_hashes")}
    assert step_dir + "/gone.bin" not in paths and step_dir + "-other/kept.bin" in paths
