"""Foreach fan-out: one unit per item (own key, attempts, commit), streaming between foreach steps, resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_helpers import bridge_env, events, run_runner, schema_dir, trace, wait_for, write_manifest
from bridge_helpers import state_rows as rows
from test_bridge_concurrency import jobs_log, pool_manifest

from bridge.runner import EXIT_OK

ITEMS = ["a", "b", "c", "d", "e"]


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    return schema_dir(tmp_path)


def fan_manifest(log: Path, items: list[str], sleep_s: float = 0.0, **extra) -> dict:
    common = {"log_file": str(log), "sleep_s": sleep_s}
    return pool_manifest([
        {"id": "list", "worker": "pool", "args": {"items": items}},
        {"id": "up", "worker": "pool", "foreach": "${steps.list.result.items}", "ignore_input_files": ["log_file"],
         "args": {"tag": "${item}", "n": "${index}", **common}},
        {"id": "down", "worker": "pool", "foreach": "${steps.up.result}", "ignore_input_files": ["log_file"],
         "args": {"tag": "${item.tag}", "from": "${item.file}", **common}},
        {"id": "all", "worker": "pool", "args": {"items": "${steps.down.result}"}},
    ], **extra)


def test_each_item_is_a_unit_and_a_changed_item_redoes_only_itself(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, fan_manifest(log, ITEMS))
    code, out, _ = run_runner(m, schemas, jobs=2)
    assert code == EXIT_OK, out
    assert rows(work, "SELECT step_id, item, status FROM steps WHERE step_id='up' ORDER BY item") == [
        ("up", i, "committed") for i in range(5)]
    assert len({k for (k,) in rows(work, "SELECT committed_key FROM steps WHERE step_id='down'")}) == 5
    t = trace(work)["steps"]
    assert [it["status"] for it in t["down"]["items"]] == ["committed"] * 5
    (result_of_all,) = rows(work, "SELECT result FROM steps WHERE step_id='all'")[0]
    assert [r["tag"] for r in json.loads(result_of_all)["items"]] == ITEMS  # down's item results, in item order
    result = [json.loads(line)["tag"] for line in log.read_text().splitlines()]
    assert sorted(result) == sorted(ITEMS * 2)
    assert (work / "steps" / "up" / "3" / "out.txt").read_text() == '"d"'

    log.unlink()
    m = write_manifest(tmp_path, fan_manifest(log, ["a", "b", "X", "d", "e"]))
    code, out, _ = run_runner(m, schemas, jobs=2, explain=True)
    assert code == EXIT_OK, out
    assert sorted(j["tag"] for j in jobs_log(log)) == ["X", "X"]  # up[2] and down[2], nothing else
    assert "run     up[2]: args changed" in out and "skip    up[3]: up to date" in out
    assert "run     down[2]:" in out and "skip    down[4]: up to date" in out
    assert "run     all:" in out  # its input, the list of down's results, changed


def test_streaming_starts_downstream_items_before_upstream_ends(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    code, out, _ = run_runner(write_manifest(tmp_path, fan_manifest(log, ITEMS, sleep_s=0.4)), schemas, jobs=2)
    assert code == EXIT_OK, out
    evs = events(work)
    down0_start = next(e["ts"] for e in evs if e["event"] == "attempt_start" and e["step"] == "down"
                       and e.get("item") == 0)
    up4_end = next(e["ts"] for e in evs if e["event"] == "attempt_end" and e["step"] == "up" and e.get("item") == 4)
    assert down0_start < up4_end


def test_a_step_that_needs_its_stream_source_waits_for_all_of_it(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = fan_manifest(log, ITEMS, sleep_s=0.2)
    doc["steps"][2]["needs"] = ["up"]
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas, jobs=2)
    assert code == EXIT_OK, out
    evs = events(work)
    down_starts = [e["ts"] for e in evs if e["event"] == "attempt_start" and e["step"] == "down"]
    up_ends = [e["ts"] for e in evs if e["event"] == "attempt_end" and e["step"] == "up"]
    assert len(down_starts) == len(up_ends) == 5 and min(down_starts) > max(up_ends)


def test_failed_items_of_an_optional_step_degrade_gracefully(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = fan_manifest(log, ITEMS)
    up = doc["steps"][1]
    up["optional"] = True
    up["args"]["crash_once"] = "${item}"  # a marker per item in the cwd: items whose marker exists succeed
    for name in ("a", "c", "e"):
        (tmp_path / name).write_text("exists")
    doc["steps"][1]["ignore_input_files"].append("crash_once")
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas, jobs=2)
    assert code == EXIT_OK, out
    t = trace(work)["steps"]
    assert [it["status"] for it in t["up"]["items"]] == ["committed", "failed", "committed", "failed", "committed"]
    assert t["up"]["status"] == "failed" and t["up"]["error"]["failed_items"] == [1, 3]
    assert [it["status"] for it in t["down"]["items"]] == ["committed", "skipped", "committed", "skipped",
                                                           "committed"]
    assert t["all"]["status"] == "skipped"
    failed = [e for e in events(work) if e["event"] == "step_failed" and e["step"] == "up" and "item" not in e]
    assert failed and failed[0]["failed_items"] == [1, 3]


@pytest.mark.slow
def test_a_runner_killed_mid_fan_out_resumes_without_loss_or_double_commit(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, fan_manifest(log, [f"i{i}" for i in range(8)], sleep_s=0.3))
    argv = [sys.executable, "-m", "bridge", "run", str(m), "--jobs", "2"]
    runner = subprocess.Popen(argv, cwd=tmp_path, env=bridge_env(schemas), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: len(jobs_log(log)) >= 4, 60)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)
    finally:
        if runner.poll() is None:
            runner.kill()
    done = subprocess.run(argv, cwd=tmp_path, env=bridge_env(schemas), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    committed = rows(work, "SELECT step_id, item, count(*) FROM attempts WHERE status='committed' "
                           "AND step_id IN ('up', 'down') GROUP BY step_id, item")
    assert sorted(committed) == sorted([(s, i, 1) for s in ("up", "down") for i in range(8)])
    assert rows(work, "SELECT count(*) FROM steps WHERE item >= 0 AND status='committed'") == [(16,)]


@pytest.mark.parametrize("warm", [True, False])
def test_ctrl_c_stops_every_running_item(tmp_path, schemas, warm):
    import psutil

    work = tmp_path / "t.work"
    steps = [{"id": "list", "worker": "pool", "args": {"items": [0, 1, 2, 3]}},
             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}",
              "args": {"tag": "${item}", "sleep_s": 30}}]
    m = write_manifest(tmp_path, pool_manifest(steps, one_shot=not warm))
    argv = [sys.executable, "-m", "bridge", "run", str(m), "--jobs", "2"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=bridge_env(schemas), stdout=subprocess.PIPE, text=True)
    try:
        def running() -> list[int]:
            try:
                return [pid for (pid,) in rows(work, "SELECT worker_pid FROM attempts WHERE step_id='each' "
                                                     "AND status='running' AND worker_pid IS NOT NULL")]
            except sqlite3.OperationalError:  # not created yet
                return []

        assert wait_for(lambda: len(running()) == 2, 60)
        pids = running()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    t = trace(work)["steps"]["each"]
    assert t["status"] == "interrupted"
    assert sorted(it["status"] for it in t["items"]) == ["interrupted", "interrupted"]
    assert rows(work, "SELECT count(*) FROM attempts WHERE status='running'") == [(0,)]


def test_validate_names_foreach_and_item_mistakes(tmp_path, capsys):
    from bridge.cli import main

    doc = pool_manifest([
        {"id": "list", "worker": "pool", "args": {"items": [1], "oops": "${item}"}},
        {"id": "a", "worker": "pool", "foreach": "${steps.nowhere.result}", "args": {}},
        {"id": "b", "worker": "pool", "foreach": "${steps.list.result.items}", "args": {"x": "scene ${index}"}},
        {"id": "c", "worker": "pool", "foreach": "${steps.c.result}"},
    ])
    assert main(["validate", str(write_manifest(tmp_path, doc)), "--json"]) == 2
    errors = {(e["path"], e["type"]) for e in json.loads(capsys.readouterr().out)["errors"]}
    assert errors == {("$.steps[0].args.oops", "item_outside_foreach"), ("$.steps[1].foreach", "unknown_step"),
                      ("$.steps[2].args.x", "bad_reference"), ("$.steps[3].foreach", "self_reference")}


def test_only_a_streaming_step_uses_its_committed_upstream_items(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, fan_manifest(log, ITEMS))
    assert run_runner(m, schemas, jobs=2)[0] == EXIT_OK
    log.unlink()
    code, out, _ = run_runner(m, schemas, only={"down"}, force={"down"}, explain=True)
    assert code == EXIT_OK, out
    assert sorted(j["tag"] for j in jobs_log(log)) == ITEMS  # down's five items; up is not run
    assert "run     down[4]: forced (--force)" in out and "up[" not in out
    t = trace(work)["steps"]
    assert t["up"]["status"] == "not_selected" and t["down"]["status"] == "committed"


def test_clean_keeps_every_committed_item_and_a_resume_after_it_runs_nothing(tmp_path, schemas, capsys):
    from bridge import front

    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, fan_manifest(log, ITEMS))
    assert run_runner(m, schemas, jobs=2)[0] == EXIT_OK
    items_before = sorted(p.relative_to(work).as_posix() for p in (work / "steps").glob("*/*/out.txt"))
    assert len(items_before) == 10  # up/0..4 and down/0..4

    assert front.main(["clean", str(work), "--keep-last", "0", "--json"]) == 0
    capsys.readouterr()
    assert sorted(p.relative_to(work).as_posix() for p in (work / "steps").glob("*/*/out.txt")) == items_before
    log.unlink()
    code, out, _ = run_runner(m, schemas, jobs=2, explain=True)
    assert code == EXIT_OK, out
    assert not log.exists()  # every item a cache hit: no worker ran


def test_a_whole_step_turned_foreach_leaves_none_of_its_files_even_if_killed_while_replacing_them(
        tmp_path, schemas, monkeypatch):
    import bridge.foreach_steps

    whole = pool_manifest([{"id": "s", "worker": "pool", "args": {"tag": "whole"}}])
    assert run_runner(write_manifest(tmp_path, whole), schemas)[0] == EXIT_OK
    old_dir = tmp_path / "t.work" / "steps" / "s"
    assert (old_dir / "out.txt").exists()
    fan = write_manifest(tmp_path, pool_manifest([
        {"id": "list", "worker": "pool", "args": {"items": [0, 1]}},
        {"id": "s", "worker": "pool", "foreach": "${steps.list.result.items}", "args": {"tag": "${item}"}}]))
    real_replace = os.replace

    def killed_at_the_rename(src, dst, *args, **kwargs):
        if Path(src) == old_dir:
            raise OSError("the runner was killed here")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(bridge.foreach_steps.os, "replace", killed_at_the_rename)
    with pytest.raises(OSError):
        run_runner(fan, schemas)
    monkeypatch.undo()
    assert run_runner(fan, schemas)[0] == EXIT_OK
    assert sorted(p.name for p in old_dir.iterdir()) == ["0", "1"]  # the whole step's out.txt did not stay


@pytest.mark.parametrize(("new", "runs"), [("Zabcde", ["Z"]), ("bcde", []), ("aXcde", ["X"]), ("edcba", [])])
def test_an_item_whose_key_was_committed_at_another_index_reuses_that_output(tmp_path, schemas, new, runs):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"

    def manifest(items: str) -> Path:
        return write_manifest(tmp_path, pool_manifest([
            {"id": "list", "worker": "pool", "args": {"items": list(items)}},
            {"id": "up", "worker": "pool", "foreach": "${steps.list.result.items}",
             "ignore_input_files": ["log_file"], "args": {"tag": "${item}", "log_file": str(log)}},
            {"id": "all", "worker": "pool", "args": {"items": "${steps.up.result}"}}]))

    assert run_runner(manifest("abcde"), schemas, jobs=2)[0] == EXIT_OK
    log.unlink()
    code, out, _ = run_runner(manifest(new), schemas, jobs=2, explain=True)
    assert code == EXIT_OK, out
    assert sorted(j["tag"] for j in jobs_log(log) if j["tag"] in new) == runs  # only new values ran
    assert [json.loads((work / "steps" / "up" / str(i) / "out.txt").read_text()) for i in range(len(new))] == list(new)
    (result,) = rows(work, "SELECT result FROM steps WHERE step_id='all'")[0]
    items = json.loads(result)["items"]
    assert [r["tag"] for r in items] == list(new)
    assert all(r["file"] == str((work / "steps" / "up" / str(i) / "out.txt").resolve()) for i, r in enumerate(items))
    code, out, _ = run_runner(manifest(new), schemas, jobs=2, explain=True)
    assert code == EXIT_OK and "run     " not in out  # a resume after it runs nothing
