"""The runner's throughput features: concurrent steps, GPU slots and VRAM budgets, the state.db migration."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import psutil
import pytest
from bridge_helpers import REPO, events, run_runner, schema_dir, trace, write_manifest

from bridge.cli import main
from bridge.gpus import parse_gpus
from bridge.runner import EXIT_INVALID, EXIT_OK

POOL = str(REPO / "tests" / "fixtures" / "pool_worker.py")


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    return schema_dir(tmp_path)


def pool_manifest(steps: list[dict], *, one_shot: bool = True, max_attempts: int = 1, **extra) -> dict:
    argv = [sys.executable, POOL] + (["--one-shot"] if one_shot else [])
    return {"version": 1, "name": "t", "workers": {"pool": argv},
            "defaults": {"retry": {"max_attempts": max_attempts, "backoff_s": [0]}, "kill_grace_s": 1.0},
            "steps": steps, **extra}


def jobs_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.parametrize(("jobs", "overlap"), [(2, True), (1, False)])
def test_independent_steps_overlap_only_with_free_slots(tmp_path, schemas, jobs, overlap):
    log = tmp_path / "jobs.log"
    steps = [{"id": s, "worker": "pool", "args": {"tag": s, "sleep_s": 2, "log_file": str(log)},
              "ignore_input_files": ["log_file"]} for s in ("a", "b")]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps)), schemas, jobs=jobs)
    assert code == EXIT_OK, out
    a, b = jobs_log(log)
    assert overlapping(a, b) is overlap


def test_gpu_steps_never_share_a_device(tmp_path, schemas):
    log = tmp_path / "jobs.log"
    steps = [{"id": f"g{i}", "worker": "pool", "resources": {"gpu": 1},
              "args": {"tag": i, "sleep_s": 0.8, "log_file": str(log)}, "ignore_input_files": ["log_file"]}
             for i in range(3)]
    code, out, runner = run_runner(write_manifest(tmp_path, pool_manifest(steps)), schemas, jobs=3,
                                   gpus=parse_gpus("0,1"))
    assert code == EXIT_OK, out
    done = jobs_log(log)
    assert sorted(j["cvd"] for j in done) in (["0", "0", "1"], ["0", "1", "1"])
    for i, a in enumerate(done):
        for b in done[i + 1:]:
            assert not (a["cvd"] == b["cvd"] and overlapping(a, b)), (a, b)
    assert any(overlapping(a, b) for a in done for b in done if a is not b)  # two devices: two at once
    devices = [t["attempts"][0]["devices"] for t in trace(tmp_path / "t.work")["steps"].values()]
    assert sorted(d[0] for d in devices) in (["cuda:0", "cuda:0", "cuda:1"], ["cuda:0", "cuda:1", "cuda:1"])


@pytest.mark.parametrize(("vram_gb", "together"), [(6, False), (4, True)])
def test_vram_budget_decides_what_shares_a_gpu(tmp_path, schemas, vram_gb, together):
    log = tmp_path / "jobs.log"
    steps = [{"id": f"g{i}", "worker": "pool", "resources": {"gpu": 1, "vram_gb": vram_gb},
              "args": {"tag": i, "sleep_s": 1, "log_file": str(log)}, "ignore_input_files": ["log_file"]}
             for i in range(2)]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps)), schemas, jobs=2,
                              gpus=parse_gpus("0:10"))
    assert code == EXIT_OK, out
    a, b = jobs_log(log)
    assert (a["cvd"], b["cvd"]) == ("0", "0")
    assert overlapping(a, b) is together


def test_a_gpu_step_without_gpus_needs_a_cpu_fallback(tmp_path, schemas, capsys):
    log = tmp_path / "jobs.log"
    step = {"id": "g", "worker": "pool", "resources": {"gpu": 1}, "args": {"log_file": str(log)},
            "ignore_input_files": ["log_file"]}
    m = write_manifest(tmp_path, pool_manifest([step]))
    code, out, _ = run_runner(m, schemas, gpus=[])
    assert code == EXIT_INVALID and "step g: needs 1 GPU(s) and none was found" in out and "fallback" in out
    assert main(["validate", str(m), "--gpus", "none"]) == 2
    assert "needs 1 GPU(s)" in capsys.readouterr().err

    m = write_manifest(tmp_path, pool_manifest([{**step, "fallback": "cpu"}]))
    code, out, _ = run_runner(m, schemas, gpus=[])
    assert code == EXIT_OK, out
    assert jobs_log(log)[0]["cvd"] == ""  # hidden from the GPU it does not get
    assert trace(tmp_path / "t.work")["steps"]["g"]["attempts"][0]["devices"] == ["cpu"]


def test_more_gpus_or_vram_than_the_machine_has_is_refused(tmp_path, schemas):
    steps = [{"id": "two", "worker": "pool", "resources": {"gpu": 2}},
             {"id": "big", "worker": "pool", "resources": {"gpu": 1, "vram_gb": 80}}]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps)), schemas, gpus=parse_gpus("0:24"))
    assert code == EXIT_INVALID
    assert "step two: needs 2 GPUs; only 1 available" in out and "step big: needs 80 GB of VRAM" in out


FORMAT1_STEPS = """CREATE TABLE steps (
    step_id TEXT PRIMARY KEY, status TEXT NOT NULL, committed_key TEXT, components TEXT, result TEXT,
    outputs TEXT, committed_dir TEXT, committed_at REAL, last_key TEXT, last_error TEXT, updated_at REAL NOT NULL,
    result_file TEXT)"""
FORMAT1_ATTEMPTS = """CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    cache_key TEXT, status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, exit_code INTEGER,
    error_kind TEXT, message TEXT, retryable INTEGER, wall_s REAL, peak_rss_mb REAL, staging_dir TEXT,
    worker_pid INTEGER, worker_started REAL)"""


def _as_format1(db_path: Path) -> None:
    """Rewrite a state.db as the first runner left it (format 1: one row per step, no items)."""
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT step_id, status, committed_key, components, result, outputs, committed_dir, "
                      "committed_at, last_key, last_error, updated_at, result_file FROM steps").fetchall()
    db.executescript("DROP TABLE steps; DROP TABLE attempts; UPDATE meta SET value='1' WHERE key='format';"
                     + FORMAT1_STEPS + ";" + FORMAT1_ATTEMPTS + ";")
    db.executemany("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def test_a_format1_workdir_is_migrated_and_resumes(tmp_path, schemas):
    steps = [{"id": "a", "worker": "pool", "args": {"tag": "a"}},
             {"id": "b", "worker": "pool", "args": {"tag": "${steps.a.result.tag}"}}]
    m = write_manifest(tmp_path, pool_manifest(steps))
    assert run_runner(m, schemas)[0] == EXIT_OK
    db_path = tmp_path / "t.work" / ".bridge" / "state.db"
    _as_format1(db_path)

    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK, out
    assert "skip    a: up to date" in out and "skip    b: up to date" in out
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT value FROM meta WHERE key='format'").fetchone() == ("3",)
    assert db.execute("SELECT step_id, item FROM steps ORDER BY step_id").fetchall() == [("a", -1), ("b", -1)]


def test_a_dry_run_plans_a_format1_workdir_without_touching_it(tmp_path, schemas):
    import hashlib

    from bridge.lock import WorkdirLock

    m = write_manifest(tmp_path, pool_manifest([{"id": "a", "worker": "pool", "args": {"tag": "a"}}]))
    assert run_runner(m, schemas)[0] == EXIT_OK
    bridge_dir = tmp_path / "t.work" / ".bridge"
    _as_format1(bridge_dir / "state.db")
    before = hashlib.sha256((bridge_dir / "state.db").read_bytes()).hexdigest()
    lock = WorkdirLock(bridge_dir / "lock")
    lock.acquire()  # another runner holds the workdir: a dry run takes no lock, so it must write nothing
    try:
        code, out, _ = run_runner(m, schemas, dry_run=True)
    finally:
        lock.release()
    assert code == EXIT_OK and "skip    a: up to date" in out, out  # planned from a migrated in-memory copy
    assert hashlib.sha256((bridge_dir / "state.db").read_bytes()).hexdigest() == before
    db = sqlite3.connect(bridge_dir / "state.db")
    assert db.execute("SELECT value FROM meta WHERE key='format'").fetchone() == ("1",)


def test_a_newer_state_format_is_refused(tmp_path, schemas):
    m = write_manifest(tmp_path, pool_manifest([{"id": "a", "worker": "pool"}]))
    assert run_runner(m, schemas)[0] == EXIT_OK
    db = sqlite3.connect(tmp_path / "t.work" / ".bridge" / "state.db")
    db.execute("UPDATE meta SET value='9' WHERE key='format'")
    db.commit()
    db.close()
    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_INVALID and "format 9, newer than this runner's 3" in out


def test_ten_items_share_one_warm_process_and_one_model_load(tmp_path, schemas):
    loads, log = tmp_path / "loads.log", tmp_path / "jobs.log"
    steps = [{"id": "list", "worker": "pool", "args": {"items": list(range(10))}},
             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}",
              "ignore_input_files": ["loads_file", "log_file"],
              "args": {"tag": "${item}", "model": "big", "load_s": 0.3, "loads_file": str(loads),
                       "log_file": str(log)}}]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps, one_shot=False)), schemas, jobs=1)
    assert code == EXIT_OK, out
    assert len({j["pid"] for j in jobs_log(log)}) == 1 and len(jobs_log(log)) == 10
    assert len(loads.read_text().splitlines()) == 1  # "big" loaded once, for all 10 items
    attempts = trace(tmp_path / "t.work")["steps"]["each"]["items"]
    assert all(it["attempts"][0]["warm"] for it in attempts)
    relayed = [e for e in events(tmp_path / "t.work") if e["event"] == "progress" and e["step"] == "each"]
    assert sorted(e["item"] for e in relayed) == list(range(10))  # each request's progress, to its own item
    logs = list((tmp_path / "t.work" / ".bridge" / "attempts").glob("each.*/stderr.log"))
    assert len(logs) == 10 and all('"started"' in p.read_text() for p in logs)


def test_no_warm_and_one_shot_workers_start_a_process_per_attempt(tmp_path, schemas):
    log = tmp_path / "jobs.log"
    steps = [{"id": f"s{i}", "worker": "pool", "args": {"tag": i, "log_file": str(log)},
              "ignore_input_files": ["log_file"]} for i in range(3)]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps, one_shot=False)), schemas, jobs=1,
                              warm=False)
    assert code == EXIT_OK, out
    assert len({j["pid"] for j in jobs_log(log)}) == 3
    log.unlink()
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps, one_shot=True)), schemas, jobs=1,
                              force={"s0", "s1", "s2"})
    assert code == EXIT_OK, out
    assert len({j["pid"] for j in jobs_log(log)}) == 3  # no `warm` in its --describe: never served warm


@pytest.mark.parametrize("failure", ["crash_once", "hang_once"])
def test_a_warm_worker_that_dies_or_hangs_is_replaced_and_the_item_commits_once(tmp_path, schemas, failure):
    log, marker = tmp_path / "jobs.log", tmp_path / "marker"
    steps = [{"id": "list", "worker": "pool", "args": {"items": [0, 1, 2]}},
             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}", "timeout_s": 3,
              "ignore_input_files": ["log_file", failure],
              "args": {"tag": "${item}", "log_file": str(log), failure: str(marker)}}]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps, one_shot=False, max_attempts=2)),
                              schemas, jobs=1)
    assert code == EXIT_OK, out
    items = trace(tmp_path / "t.work")["steps"]["each"]["items"]
    first = [it for it in items if len(it["attempts"]) == 2]
    assert len(first) == 1
    kind = "crash" if failure == "crash_once" else "timeout"
    assert first[0]["attempts"][0]["error_kind"] == kind and first[0]["attempts"][1]["status"] == "committed"
    done = jobs_log(log)
    assert sorted(j["tag"] for j in done) == [0, 1, 2]  # each item committed once
    dead = int(marker.read_text())
    assert dead not in {j["pid"] for j in done}  # the replaced process served none of them
    assert not psutil.pid_exists(dead) or psutil.Process(dead).status() == psutil.STATUS_ZOMBIE


def test_quiet_prints_failures_and_the_final_line_only(tmp_path, schemas):
    steps = [{"id": "ok", "worker": "pool", "args": {"tag": 1}},
             {"id": "bad", "worker": "pool", "args": {"crash_once": str(tmp_path / "marker")}}]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(steps)), schemas, quiet=True)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("✗ bad failed (crash)") and "exit 1 (1 committed, 1 failed)" in lines[1]


def test_a_terminal_gets_progress_bars(tmp_path, schemas):
    import io

    from bridge.manifest import load
    from bridge.runner import Runner, RunOptions
    from bridge.schemas import SchemaStore

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    steps = [{"id": "list", "worker": "pool", "args": {"items": [1, 2, 3]}},
             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}", "args": {"tag": "${item}"}}]
    out = Terminal()
    store = SchemaStore(schemas)
    runner = Runner(load(write_manifest(tmp_path, pool_manifest(steps)), store), RunOptions(jobs=2), schemas=store,
                    console=out)
    assert runner.run() == EXIT_OK
    bars = runner.display.bars
    overall = bars.tasks[0]
    assert (overall.completed, overall.total) == (4, 4)  # the list step and three items
    assert [(t.description.strip(), t.completed, t.total) for t in bars.tasks[1:]] == [("each items", 3, 3)]


def test_an_output_is_hashed_once_then_memoised_across_commit_and_resume(tmp_path, schemas, monkeypatch):
    import bridge.safefs

    hashed: list[int] = []
    real = bridge.safefs.sha256_fd
    monkeypatch.setattr(bridge.safefs, "sha256_fd", lambda fd: hashed.append(fd) or real(fd))
    steps = [{"id": "a", "worker": "pool", "args": {"tag": "a"}},
             {"id": "b", "worker": "pool", "args": {"tag": "b", "clip": "${steps.a.result.file}"}}]
    m = write_manifest(tmp_path, pool_manifest(steps))
    assert run_runner(m, schemas)[0] == EXIT_OK
    assert len(hashed) == 2  # each output once, in staging; b's input (a's committed clip) came from the memo
    hashed.clear()
    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK and "skip    b: up to date" in out
    assert hashed == []  # resume verified both outputs by (path, size, mtime)
    (tmp_path / "t.work" / "steps" / "a" / "out.txt").write_text('"z"')  # same size, new content and mtime
    code, out, _ = run_runner(m, schemas, explain=True)
    assert "run     a: output corrupt" in out


def test_an_output_rewritten_in_place_with_its_old_size_and_mtime_is_hashed_again(tmp_path, schemas):
    m = write_manifest(tmp_path, pool_manifest([{"id": "a", "worker": "pool", "args": {"tag": "a"}}]))
    assert run_runner(m, schemas)[0] == EXIT_OK
    out_file = tmp_path / "t.work" / "steps" / "a" / "out.txt"
    before = out_file.stat()
    with open(out_file, "r+b") as f:  # same inode, same size, other bytes
        f.write(b'"z"')
    os.utime(out_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK and "run     a: output corrupt" in out


@pytest.mark.parametrize(("idle_s", "same_process"), [(0.3, False), (60, True)])
def test_a_warm_worker_idle_past_warm_idle_s_is_shut_down(tmp_path, schemas, idle_s, same_process):
    log = tmp_path / "jobs.log"
    doc = pool_manifest([
        {"id": "a", "worker": "pool", "args": {"tag": "a", "log_file": str(log)}, "ignore_input_files": ["log_file"]},
        {"id": "pause", "worker": "cold", "needs": ["a"], "args": {"sleep_s": 1.5}},
        {"id": "c", "worker": "pool", "needs": ["pause"], "args": {"tag": "c", "log_file": str(log)},
         "ignore_input_files": ["log_file"]}], one_shot=False)
    doc["workers"]["cold"] = [sys.executable, POOL, "--one-shot"]
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas, jobs=1, warm_idle_s=idle_s)
    assert code == EXIT_OK, out
    a, c = jobs_log(log)
    assert (a["pid"] == c["pid"]) is same_process
    if not same_process:
        assert not psutil.pid_exists(a["pid"]) or psutil.Process(a["pid"]).status() == psutil.STATUS_ZOMBIE


def test_requests_go_to_the_warm_process_that_holds_their_model(tmp_path, schemas):
    loads, log = tmp_path / "loads.log", tmp_path / "jobs.log"
    common = {"loads_file": str(loads), "log_file": str(log), "sleep_s": 0.3}
    ignore = ["loads_file", "log_file"]
    first = [{"id": f"{m}1", "worker": "pool", "args": {"model": m, "tag": f"{m}1", **common},
              "ignore_input_files": ignore} for m in ("A", "B")]
    second = [{"id": f"{m}2", "worker": "pool", "needs": ["A1", "B1"], "ignore_input_files": ignore,
               "args": {"model": m, "tag": f"{m}2", **common}} for m in ("B", "A")]
    code, out, _ = run_runner(write_manifest(tmp_path, pool_manifest(first + second, one_shot=False)), schemas,
                              jobs=2)
    assert code == EXIT_OK, out
    assert sorted(line.split()[1] for line in loads.read_text().splitlines()) == ["A", "B"]  # no reload
    pid = {j["tag"]: j["pid"] for j in jobs_log(log)}
    assert pid["A1"] == pid["A2"] and pid["B1"] == pid["B2"] and pid["A1"] != pid["B1"]


def test_ten_items_through_a_runtime_worker_load_its_model_once(tmp_path, schemas):
    steps = [{"id": "list", "worker": "pool", "args": {"items": list(range(10))}},
             {"id": "each", "worker": "fixture", "foreach": "${steps.list.result.items}",
              "args": {"echo": "${item}", "outputs": {"o.txt": "x"}}}]
    doc = pool_manifest(steps)
    doc["workers"]["fixture"] = [sys.executable, str(REPO / "tests" / "fixtures" / "fixture_worker.py")]
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas, jobs=1)
    assert code == EXIT_OK, out
    metrics = [it["attempts"][0]["metrics"] for it in trace(tmp_path / "t.work")["steps"]["each"]["items"]]
    assert [m["model_loads"] for m in metrics] == [1] * 10  # one process, one load, ten items
    assert [m["model_cache_hit"] for m in metrics] == [False] + [True] * 9
