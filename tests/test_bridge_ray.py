"""`--executor ray` on a local 2-node Ray cluster started by these tests (tests/ray_cluster.py), one-shot workers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from bridge_helpers import (
    BARE,
    COMMITTED_SCHEMAS,
    REPO,
    bare_manifest,
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


def _ray(tmp: Path, doc: dict, *, jobs: int = 3, data: str = "ship", placement_timeout_s: float = 30.0):
    path = write_manifest(tmp, doc)
    return run_runner(path, COMMITTED_SCHEMAS, jobs=jobs, executor="ray",
                      ray=RayOptions(data=data, placement_timeout_s=placement_timeout_s))


def _attempts(workdir: Path, sid: str) -> list[dict]:
    step = trace(workdir)["steps"][sid]
    if step.get("items"):
        return [{**a, "item": item["item"]} for item in step["items"] for a in item["attempts"]]
    return step["attempts"]


def _chain(tmp: Path, b_echo: str) -> dict:
    """a writes a file; b prefixes its own output with a's file (an input shipped to the node); c with b's."""
    (tmp / "seed.txt").write_text("seed:", encoding="utf-8")
    return bare_manifest([
        {"id": "a", "worker": "bare", "args": {"outputs": {"a": "A"}, "prefix_from": "seed.txt"}},
        {"id": "b", "worker": "bare", "args": {"outputs": {"b": "B"}, "echo": b_echo,
                                               "prefix_from": "${steps.a.result.files.a}"}},
        {"id": "c", "worker": "bare", "args": {"outputs": {"c": "C"},
                                               "prefix_from": "${steps.b.result.files.b}"}},
    ])


def _ran(workdir: Path) -> list[str]:
    """Steps that ran an attempt in the last run."""
    return sorted(sid for sid, st in trace(workdir)["steps"].items() if st["attempts"])


@pytest.mark.parametrize("data", ["ship", "shared"])
def test_same_results_and_cache_behaviour_as_local(cluster, tmp_path, data):
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir()
    remote.mkdir()
    code, out, _ = run_runner(write_manifest(local, _chain(local, "1")), COMMITTED_SCHEMAS, jobs=2)
    assert code == 0, out
    code, out, _ = _ray(remote, _chain(remote, "1"), data=data)
    assert code == 0, out
    for name in ("a/a", "b/b", "c/c"):
        assert (remote / "t.work/steps" / name).read_bytes() == (local / "t.work/steps" / name).read_bytes()
    assert (remote / "t.work/steps/c/c").read_text() == "seed:ABC"
    assert all(_attempts(remote / "t.work", s)[0]["node"]["data"] == data for s in "abc")

    code, out, _ = _ray(remote, _chain(remote, "1"), data=data)  # resume: everything is up to date
    assert code == 0 and _ran(remote / "t.work") == [], out
    code, _, _ = run_runner(write_manifest(local, _chain(local, "2")), COMMITTED_SCHEMAS, jobs=2)
    assert code == 0
    code, out, _ = _ray(remote, _chain(remote, "2"), data=data)  # b's arg changed: b and c run again, a does not
    assert code == 0, out
    assert _ran(remote / "t.work") == _ran(local / "t.work") == ["b", "c"]


def test_foreach_items_run_on_both_nodes_and_outputs_arrive_verified(cluster, tmp_path):
    doc = bare_manifest([
        {"id": "list", "worker": "bare", "args": {"echo": ["x", "y", "z"]}},
        {"id": "each", "worker": "bare", "foreach": "${steps.list.result.echo}",
         "args": {"mode": "hang", "sleep_s": 1.0, "outputs": {"out.txt": "${item}"}}},
    ])
    code, out, _ = _ray(tmp_path, doc, jobs=3)  # 3 items at once need all 3 CPUs of the cluster: both nodes
    assert code == 0, out
    wd = tmp_path / "t.work"
    nodes = {a["node"]["node_id"] for a in _attempts(wd, "each")}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    for i, text in enumerate("xyz"):
        assert (wd / "steps/each" / str(i) / "out.txt").read_text() == text
    attempt = _attempts(wd, "each")[0]
    assert attempt["node"]["node_output_dir"] != str(wd / "steps/each/0")  # staged on the node, shipped back
    placed = [e for e in events(wd) if e["event"] == "attempt_placed" and e["step"] == "each"]
    assert {e["node_id"] for e in placed} == nodes and all(e["node_ip"] for e in placed)


def test_concurrent_gpu_steps_see_different_devices(cluster, tmp_path):
    gpu_step = {"worker": "bare", "resources": {"gpu": 1},
                "args": {"mode": "hang", "sleep_s": 1.5, "env_keys": ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"]}}
    doc = bare_manifest([{"id": "g1", **gpu_step}, {"id": "g2", **gpu_step}])
    code, out, _ = _ray(tmp_path, doc, jobs=2)
    assert code == 0, out
    wd = tmp_path / "t.work"
    seen = [state_rows(wd, f"SELECT result FROM steps WHERE step_id = '{s}'") for s in ("g1", "g2")]
    envs = [json.loads(rows[0][0])["env"] for rows in seen]
    assert {e["CUDA_VISIBLE_DEVICES"] for e in envs} == {"0", "1"}
    assert all(e["OMP_NUM_THREADS"] == "1" for e in envs)  # the step's declared CPUs (1), recorded too
    starts = {e["step"]: e["ts"] for e in events(wd) if e["event"] == "attempt_placed"}
    ends = {e["step"]: e["ts"] for e in events(wd) if e["event"] == "attempt_end"}
    assert starts["g1"] < ends["g2"] and starts["g2"] < ends["g1"]  # they ran at the same time
    assert [_attempts(wd, s)[0]["node"]["devices"] for s in ("g1", "g2")] in (
        [["cuda:0"], ["cuda:1"]], [["cuda:1"], ["cuda:0"]])
    assert all(_attempts(wd, s)[0]["node"]["threads"] == 1 for s in ("g1", "g2"))


def test_custom_resource_places_the_step_on_the_node_that_has_it(cluster, tmp_path):
    doc = bare_manifest([{"id": "b", "worker": "bare", "resources": {"custom": {"node_b": 1}}, "args": {}}])
    code, out, _ = _ray(tmp_path, doc)
    assert code == 0, out
    node_b = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node_b" in n["Resources"]]
    assert _attempts(tmp_path / "t.work", "b")[0]["node"]["node_id"] in node_b


def test_a_step_no_node_can_take_fails_within_the_placement_timeout(cluster, tmp_path):
    doc = bare_manifest([
        {"id": "big", "worker": "bare", "resources": {"custom": {"gpu_80gb": 1}}, "args": {}},
        {"id": "many", "worker": "bare", "resources": {"gpu": 4}, "args": {}},
        {"id": "fine", "worker": "bare", "args": {}},
    ], max_attempts=3)
    code, out, _ = _ray(tmp_path, doc, placement_timeout_s=1.0)
    assert code == 1
    wd = tmp_path / "t.work"
    big, many = _attempts(wd, "big"), _attempts(wd, "many")
    assert len(big) == len(many) == 1  # not retried: waiting longer cannot help
    assert big[0]["error_kind"] == "placement" and "`gpu_80gb` 1 (no node has it)" in big[0]["message"]
    assert "`GPU` 4 (at most 2 on one node)" in many[0]["message"]
    assert "--placement-timeout-s 1" in many[0]["message"]
    assert trace(wd)["steps"]["fine"]["status"] == "committed"


def test_runner_killed_stops_the_worker_on_the_node_and_resume_commits_once(cluster, tmp_path):
    hold, counts = tmp_path / "hold", tmp_path / "count"
    hold.write_text("")
    doc = bare_manifest([{"id": "h", "worker": "bare", "resources": {"custom": {"node_b": 1}},
                          "args": {"mode": "hang", "sleep_s": 60, "hang_while_file": str(hold),
                                   "count_file": str(counts), "outputs": {"o.txt": "o"}}}])
    path = write_manifest(tmp_path, doc)
    runner = subprocess.Popen([sys.executable, "-m", "bridge", "run", str(path), "--executor", "ray",
                               "--ray-address", cluster.address, "--quiet"], env=bridge_env(COMMITTED_SCHEMAS),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: counts.exists() and counts.read_text().strip(), timeout_s=60)
        worker = psutil.Process(int(counts.read_text().split()[0]))
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        assert wait_for(lambda: not process_alive(worker), timeout_s=30)  # the driver's death took the worker along
    finally:
        if runner.poll() is None:
            runner.kill()
    hold.unlink()
    code, out, _ = _ray(tmp_path, doc)
    assert code == 0, out
    wd = tmp_path / "t.work"
    assert [e["event"] for e in events(wd) if e["event"] in ("attempt_abandoned", "step_committed")] == [
        "attempt_abandoned", "step_committed"]
    assert (wd / "steps/h/o.txt").read_text() == "o"



@pytest.mark.parametrize("warm", [False, True])
def test_a_lost_node_is_a_crash_retried_on_another_node(cluster, tmp_path, warm):
    # The items each take a `slot`: 2 on the doomed node, 2 on a spare one (a warm actor holds no CPUs, so only a
    # resource it holds spreads actors over nodes).
    doomed = cluster.add_node(num_cpus=2, resources={"doomed": 1, "slot": 2})
    spare = cluster.add_node(num_cpus=2, resources={"slot": 2})
    cluster.wait_for_nodes()
    hold = tmp_path / "hold"  # the items run until it is removed: the doomed node's attempt can only be lost
    hold.write_text("")
    each = ({"worker": "pool", "args": {"tag": "${item}", "hang_while_file": str(hold)}} if warm else  # an actor
            {"worker": "bare", "args": {"mode": "hang", "sleep_s": 60, "hang_while_file": str(hold),
                                        "outputs": {"i.txt": "${item}"}}})
    doc = bare_manifest([
        {"id": "list", "worker": "bare", "args": {"echo": ["0", "1", "2", "3"]}},
        {"id": "each", "foreach": "${steps.list.result.echo}", "resources": {"custom": {"slot": 1}}, **each},
    ], max_attempts=2, workers={"bare": [sys.executable, BARE], "pool": [sys.executable, POOL]})
    path = write_manifest(tmp_path, doc)
    result = {}

    def run() -> None:
        result["code"], result["out"], _ = run_runner(path, COMMITTED_SCHEMAS, jobs=4, executor="ray",
                                                      ray=RayOptions(data="shared"))  # `hold` is seen as is

    thread = threading.Thread(target=run)
    thread.start()  # 4 items at once on 4 slots: two land on the doomed node
    wd = tmp_path / "t.work"

    def on_doomed() -> list[dict]:
        return [e for e in events(wd) if e["event"] == "attempt_placed" and e["node_id"] == doomed.node_id
                and e["step"] == "each"]  # `list` may land there too, before the items start

    try:
        assert wait_for(on_doomed, timeout_s=60)
        cluster.remove_node(doomed, allow_graceful=False)
        assert wait_for(lambda: any(e["event"] == "retry_scheduled" for e in events(wd)), timeout_s=60)
    finally:
        hold.unlink()
        thread.join(120)
        cluster.remove_node(spare)
    assert result["code"] == 0, result["out"]
    lost = on_doomed()[0]
    attempts = [a for a in _attempts(wd, "each") if a["item"] == lost["item"]]
    assert [a["error_kind"] for a in attempts] == ["crash", None]
    assert doomed.node_id[:12] in attempts[0]["message"] and attempts[1]["node"]["node_id"] != doomed.node_id
    everything = _attempts(wd, "each")
    assert all(a["warm"] is warm for a in everything)
    # the other items ran once, unless Ray placed one on the dying node too before it counted as dead: then
    # that one crashed the same way and was retried elsewhere
    assert all(doomed.node_id[:12] in a["message"] for a in everything if a["error_kind"] == "crash")
    assert all(a["node"]["node_id"] != doomed.node_id for a in everything if a["error_kind"] is None)
    assert len(everything) - sum(a["error_kind"] == "crash" for a in everything) == 4
    committed = [e["item"] for e in events(wd) if e["event"] == "step_committed" and "item" in e]
    assert sorted(committed) == [0, 1, 2, 3]  # each item committed once
    assert state_rows(wd, "SELECT count(*) FROM steps WHERE step_id = 'each' AND status = 'committed'") == [(4,)]
