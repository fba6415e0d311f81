"""Warm workers on `--executor ray`: Ray actors hosting `--serve` processes (bridge/ray_warm.py), on the local
2-node cluster of tests/ray_cluster.py. The fixture worker (tests/fixtures/pool_worker.py) logs each model load
with its pid, so a test can count loads and see which process served what."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from bridge_helpers import (
    COMMITTED_SCHEMAS,
    REPO,
    bridge_env,
    events,
    process_alive,
    run_runner,
    state_rows,
    trace,
    wait_for,
    write_manifest,
)

ray = pytest.importorskip("ray")
from ray_cluster import two_nodes  # noqa: E402

from bridge.ray_executor import RayOptions  # noqa: E402

pytestmark = pytest.mark.slow
POOL = str(REPO / "tests" / "fixtures" / "pool_worker.py")


@pytest.fixture(scope="module")
def cluster():
    yield from two_nodes()


def _manifest(steps: list[dict], *, max_attempts: int = 1, timeout_s: float | None = None) -> dict:
    argv = [sys.executable, POOL]
    defaults = {"retry": {"max_attempts": max_attempts, "backoff_s": [0]}, "kill_grace_s": 1.0,
                **({"timeout_s": timeout_s} if timeout_s else {})}
    return {"version": 1, "name": "t", "workers": {"pool": argv, "pool2": argv + ["--other"]},
            "defaults": defaults, "steps": steps}


def _run(tmp: Path, doc: dict, *, jobs: int = 2, data: str = "ship", **opts):
    return run_runner(write_manifest(tmp, doc), COMMITTED_SCHEMAS, jobs=jobs, executor="ray",
                      ray=RayOptions(data=data, placement_timeout_s=30.0), **opts)


def _loads(path: Path) -> list[str]:
    return path.read_text("utf-8").split("\n")[:-1] if path.exists() else []


def _attempts(workdir: Path, sid: str) -> list[dict]:
    step = trace(workdir)["steps"][sid]
    return [a for item in step["items"] for a in item["attempts"]] if step.get("items") else step["attempts"]


def _items(n: int, **args) -> list[dict]:
    return [{"id": "list", "worker": "pool", "args": {"items": [f"i{k}" for k in range(n)]}},
            {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}",
             "args": {"tag": "${item}", **args}}]


@pytest.mark.parametrize("data", ["ship", "shared"])
def test_a_warm_worker_loads_its_model_once_per_actor_across_items(cluster, tmp_path, data):
    loads = tmp_path / "loads.log"
    doc = _manifest(_items(6, model="big", load_s=0.3, sleep_s=0.2, loads_file=str(loads)))
    code, out, _ = _run(tmp_path, doc, data=data)
    assert code == 0, out
    wd = tmp_path / "t.work"
    for k in range(6):
        assert json.loads((wd / f"steps/each/{k}/out.txt").read_text()) == f"i{k}"
    attempts = _attempts(wd, "each")
    assert all(a["warm"] for a in attempts) and len(attempts) == 6
    served_by = {a["node"]["pid"] for a in attempts}
    assert len(served_by) <= 2  # the actors' processes (jobs 2) served all 6 items
    results = state_rows(wd, "SELECT result FROM steps WHERE step_id = 'each'")
    assert {json.loads(r[0])["pid"] for r in results} == served_by
    if data == "shared":  # (mode ship gives each request its own copy of a file named in the args)
        big = [line for line in _loads(loads) if line.endswith(" big")]
        assert sorted(line.split()[0] for line in big) == sorted(str(p) for p in served_by)  # a load per actor
    placed = [e for e in events(wd) if e["event"] == "attempt_placed" and e["step"] == "each"]
    assert all(e["warm"] and e["node_id"] for e in placed)


def test_without_warm_every_item_is_its_own_process(cluster, tmp_path):
    loads = tmp_path / "loads.log"
    code, out, _ = _run(tmp_path, _manifest(_items(3, model="big", loads_file=str(loads))), data="shared", warm=False)
    assert code == 0, out
    big = [line for line in _loads(loads) if line.endswith(" big")]
    assert len(big) == 3 and len({line.split()[0] for line in big}) == 3
    assert not any(a["warm"] for a in _attempts(tmp_path / "t.work", "each"))


def test_warm_actors_on_gpus_keep_the_device_ray_gave_them(cluster, tmp_path):
    log = tmp_path / "jobs.log"
    steps = _items(4, sleep_s=0.5, log_file=str(log))
    steps[1] = {**steps[1], "resources": {"gpu": 1}, "ignore_input_files": ["log_file"]}
    code, out, _ = _run(tmp_path, _manifest(steps), data="shared")  # one log, seen by all
    assert code == 0, out
    jobs = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert len(jobs) == 4
    by_pid: dict[int, set[str]] = {}
    for job in jobs:
        by_pid.setdefault(job["pid"], set()).add(job["cvd"])
    assert all(len(devices) == 1 for devices in by_pid.values())  # a process keeps its GPU
    assert {d for devices in by_pid.values() for d in devices} <= {"0", "1"}
    if len(by_pid) == 2:  # two actors at once: Ray gave them different GPUs
        assert set.union(*by_pid.values()) == {"0", "1"}


@pytest.mark.parametrize("failure", ["crash_once", "hang_once"])
def test_a_warm_process_that_fails_is_replaced_and_the_attempt_retried(cluster, tmp_path, failure):
    marker = tmp_path / "marker"
    doc = _manifest([{"id": "w", "worker": "pool", "args": {"tag": "w", failure: str(marker)},
                      "ignore_input_files": [failure]}], max_attempts=2, timeout_s=4.0)
    code, out, _ = _run(tmp_path, doc)
    assert code == 0, out
    wd = tmp_path / "t.work"
    first, second = _attempts(wd, "w")
    assert first["error_kind"] == ("crash" if failure == "crash_once" else "timeout") and second["error_kind"] is None
    failed_pid = int(marker.read_text().split()[0])
    assert first["node"]["pid"] == failed_pid and second["node"]["pid"] != failed_pid  # a fresh actor
    assert not psutil.pid_exists(failed_pid) or psutil.Process(failed_pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(("second", "same_process"), [("pool2", False), ("pool", True)])
def test_an_idle_actor_holding_the_gpus_is_reused_or_evicted_for_another_worker(cluster, tmp_path, second,
                                                                                  same_process):
    log = tmp_path / "jobs.log"
    both_gpus = {"gpu": 2}
    steps = [{"id": "a", "worker": "pool", "resources": both_gpus, "ignore_input_files": ["log_file"],
              "args": {"tag": "a", "log_file": str(log)}},
             {"id": "b", "worker": second, "needs": ["a"], "resources": both_gpus, "ignore_input_files": ["log_file"],
              "args": {"tag": "b", "log_file": str(log), "check_pid": "${steps.a.result.pid}"}}]
    code, out, _ = _run(tmp_path, _manifest(steps), data="shared")
    assert code == 0, out
    jobs = {j["tag"]: j for j in map(json.loads, log.read_text("utf-8").splitlines())}
    assert (jobs["b"]["pid"] == jobs["a"]["pid"]) is same_process
    assert jobs["b"]["peer_alive"] is same_process  # another worker could only run once a's actor was gone


def test_runner_killed_takes_the_warm_actors_and_their_processes_along(cluster, tmp_path):
    marker = tmp_path / "hang"  # the first job hangs and writes its pid here; the resumed one does not
    doc = _manifest([{"id": "h", "worker": "pool", "args": {"tag": "h", "hang_once": str(marker)},
                      "ignore_input_files": ["hang_once"]}])
    path = write_manifest(tmp_path, doc)
    runner = subprocess.Popen([sys.executable, "-m", "bridge", "run", str(path), "--executor", "ray",
                               "--ray-address", cluster.address, "--quiet"], env=bridge_env(COMMITTED_SCHEMAS),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: marker.exists() and marker.read_text().strip(), timeout_s=60)
        worker = psutil.Process(int(marker.read_text().split()[0]))
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        assert wait_for(lambda: not process_alive(worker), timeout_s=30)  # the driver's actors died, and their process
    finally:
        if runner.poll() is None:
            runner.kill()
    code, out, _ = _run(tmp_path, doc)
    assert code == 0, out
    assert json.loads((tmp_path / "t.work/steps/h/out.txt").read_text()) == "h"



@pytest.mark.parametrize("warm", [True, False])
def test_a_retry_after_a_crash_stays_off_the_node_it_crashed_on(cluster, tmp_path, warm):
    markers = [str(tmp_path / f"crashed-{k}") for k in range(6)]  # each item crashes once, then succeeds
    steps = [{"id": "list", "worker": "pool", "args": {"items": markers}},
             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}",
              "args": {"tag": "${index}", "crash_once": "${item}"}, "ignore_input_files": ["crash_once"]}]
    code, out, _ = _run(tmp_path, _manifest(steps, max_attempts=2), jobs=3, data="shared", warm=warm)
    assert code == 0, out
    attempts = _attempts(tmp_path / "t.work", "each")
    assert [a["error_kind"] for a in attempts] == ["crash", None] * 6
    for crashed, retried in zip(attempts[::2], attempts[1::2], strict=True):
        assert retried["node"]["node_id"] != crashed["node"]["node_id"]  # the other node: both can take it


def test_steps_that_fit_one_gpu_together_share_it_with_ray_gpu_gb(cluster, tmp_path):
    log = tmp_path / "jobs.log"
    steps = _items(4, sleep_s=2.0, log_file=str(log))
    steps[1] = {**steps[1], "resources": {"gpu": 1, "vram_gb": 8}, "ignore_input_files": ["log_file"]}
    code, out, _ = run_runner(write_manifest(tmp_path, _manifest(steps)), COMMITTED_SCHEMAS, jobs=4,
                              executor="ray", ray=RayOptions(data="shared", gpu_gb=16))  # half a GPU each
    assert code == 0, out
    jobs = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert max(j["start"] for j in jobs) < min(j["end"] for j in jobs)  # all 4 at once on the 2 GPUs
    assert sorted(j["cvd"] for j in jobs) == ["0", "0", "1", "1"]
