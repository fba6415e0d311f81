"""The warm pool against the slots and the environment: an idle warm process keeps its GPU load counted, a
process serves only attempts with its environment, one that died while idle is never handed out, and a
`--serve` that does not start falls back to one process per attempt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bridge_helpers import REPO, run_runner, schema_dir, trace, write_manifest

from bridge.gpus import parse_gpus
from bridge.resources import Resources, SlotPool
from bridge.runner import EXIT_OK

POOL = str(REPO / "tests" / "fixtures" / "pool_worker.py")


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    return schema_dir(tmp_path)


def warm_manifest(steps: list[dict], *, max_attempts: int = 1, serve_flag: str | None = None) -> dict:
    argv = [sys.executable, POOL] + ([serve_flag] if serve_flag else [])
    return {"version": 1, "name": "t", "workers": {"pool": argv, "pool2": argv + ["--other"]},
            "defaults": {"retry": {"max_attempts": max_attempts, "backoff_s": [0]}, "kill_grace_s": 1.0},
            "steps": steps}


def jobs_log(path: Path) -> dict[str, dict]:
    return {j["tag"]: j for j in map(json.loads, path.read_text("utf-8").splitlines())}


def logged(log: Path, tag: str, **args) -> dict:
    return {"args": {"tag": tag, "log_file": str(log), **args}, "ignore_input_files": ["log_file"]}


@pytest.mark.parametrize("vram_gb", [8, None])
@pytest.mark.parametrize(("second", "same_process"), [("pool2", False), ("pool", True)])
def test_an_idle_warm_process_keeps_its_gpu_until_another_worker_needs_it(tmp_path, schemas, vram_gb, second,
                                                                          same_process):
    log = tmp_path / "jobs.log"
    res = {"gpu": 1, **({"vram_gb": vram_gb} if vram_gb else {})}
    steps = [{"id": "a", "worker": "pool", "resources": res, **logged(log, "a")},
             {"id": "b", "worker": second, "needs": ["a"], "resources": res,
              **logged(log, "b", check_pid="${steps.a.result.pid}")}]
    code, out, _ = run_runner(write_manifest(tmp_path, warm_manifest(steps)), schemas, jobs=2,
                              gpus=parse_gpus("0:10"))
    assert code == EXIT_OK, out
    jobs = jobs_log(log)
    # the 10 GB GPU never holds two 8 GB (or exclusive) processes: a's idle one is reused, or gone first
    assert (jobs["b"]["pid"] == jobs["a"]["pid"]) is same_process
    assert jobs["b"]["peer_alive"] is same_process


def test_a_parked_gpu_load_counts_until_evicted_or_taken_over():
    pool = SlotPool(jobs=2, gpus=parse_gpus("0:10"))
    evicted: list[list[int]] = []
    eight = Resources(gpu=1, vram_gb=8)
    grant = pool.try_acquire(eight, "pool")
    pool.park(7, "pool", grant)
    pool.release(grant)
    assert pool.try_acquire(eight, "pool2") is None  # no evictor: the idle process's 8 GB still count
    pool.evict = evicted.append
    again = pool.try_acquire(eight, "pool")
    assert again.warm_token == 7 and evicted == []  # the same worker takes its own idle process over
    pool.park(8, "pool", again)
    pool.release(again)
    other = pool.try_acquire(eight, "pool2")
    assert other is not None and other.warm_token is None and evicted == [[8]]
    assert pool.try_acquire(Resources(gpu=1, vram_gb=2), "pool2") is not None  # 8 + 2: the victim is gone


def test_a_warm_process_serves_only_attempts_with_its_environment(tmp_path, schemas, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    log = tmp_path / "jobs.log"
    steps = [{"id": "a", "worker": "pool", **logged(log, "a")},
             {"id": "b", "worker": "pool", "needs": ["a"], "resources": {"cpu": 1}, **logged(log, "b")}]
    code, out, _ = run_runner(write_manifest(tmp_path, warm_manifest(steps)), schemas, jobs=1, gpus=[])
    assert code == EXIT_OK, out
    jobs = jobs_log(log)
    assert (jobs["a"]["cvd"], jobs["b"]["cvd"]) == ("0,1", "")  # b declared resources without a GPU: none
    assert jobs["a"]["pid"] != jobs["b"]["pid"]


def test_a_warm_process_that_died_while_idle_is_replaced_without_using_an_attempt(tmp_path, schemas):
    log = tmp_path / "jobs.log"
    doc = warm_manifest([
        {"id": "a", "worker": "pool", **logged(log, "a")},
        {"id": "k", "worker": "killer", "args": {"tag": "k", "kill_pid": "${steps.a.result.pid}"}},
        {"id": "b", "worker": "pool", "needs": ["k"], **logged(log, "b")}])
    doc["workers"]["killer"] = [sys.executable, POOL, "--one-shot"]
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas, jobs=1)
    assert code == EXIT_OK, out
    b = trace(tmp_path / "t.work")["steps"]["b"]
    assert len(b["attempts"]) == 1 and b["attempts"][0]["warm"]
    jobs = jobs_log(log)
    assert jobs["b"]["pid"] != jobs["a"]["pid"]


@pytest.mark.parametrize(("serve_flag", "attempts"), [("--serve-hangs", 2), ("--serve-crashes", 1)])
def test_a_serve_process_that_does_not_start_falls_back_to_one_shot(tmp_path, schemas, serve_flag, attempts):
    log = tmp_path / "jobs.log"
    steps = [{"id": f"s{i}", "worker": "pool", "timeout_s": 2, "needs": [f"s{i - 1}"] if i else [],
              **logged(log, f"s{i}")} for i in range(2)]
    code, out, _ = run_runner(write_manifest(tmp_path, warm_manifest(steps, max_attempts=2, serve_flag=serve_flag)),
                              schemas, jobs=1)
    assert code == EXIT_OK, out
    steps_trace = trace(tmp_path / "t.work")["steps"]
    first = steps_trace["s0"]["attempts"]
    assert len(first) == attempts
    if serve_flag == "--serve-hangs":  # the start used up the step's 2 s: a timeout, not a crash
        assert first[0]["error_kind"] == "timeout" and "ready" in first[0]["message"]
    assert [a["warm"] for a in steps_trace["s1"]["attempts"]] == [False]  # one-shot for the rest of the run
    jobs = jobs_log(log)
    assert jobs["s0"]["pid"] != jobs["s1"]["pid"]


def test_a_crash_message_quotes_only_the_crashed_request_stderr(tmp_path, schemas):
    steps = [{"id": "a", "worker": "pool", "args": {"tag": "a", "noise": "noise of request a"}},
             {"id": "b", "worker": "pool", "needs": ["a"], "ignore_input_files": ["crash_once"],
              "args": {"tag": "b", "noise": "noise of request b", "crash_once": str(tmp_path / "marker")}}]
    run_runner(write_manifest(tmp_path, warm_manifest(steps)), schemas, jobs=1)
    b = trace(tmp_path / "t.work")["steps"]["b"]["attempts"][0]
    assert b["error_kind"] == "crash" and "noise of request b" in b["message"]
    assert "noise of request a" not in b["message"]


def test_the_serve_stderr_relay_splits_lines_and_keeps_the_last_one_without_newline(tmp_path):
    import os

    from bridge.serve_stderr import RoutedStderr

    read_end, write_end = os.pipe()
    relay = RoutedStderr(os.fdopen(read_end, "rb"))
    events: list[dict] = []
    relay.route(tmp_path / "stderr.log", events.append)
    relay.start()
    os.write(write_end, b'noise one\n{"event": "progress", "fraction": 0.5}\nlast')
    os.close(write_end)
    relay.join(timeout=10)
    assert list(relay.tail) == ["noise one", "last"] and [e["fraction"] for e in events] == [0.5]
    assert (tmp_path / "stderr.log").read_bytes() == b'noise one\n{"event": "progress", "fraction": 0.5}\nlast'
