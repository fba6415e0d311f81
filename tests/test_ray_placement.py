"""`--ray-gpu-gb`: a one-GPU step's `vram_gb` becomes a share of one Ray GPU; `validate --executor ray` names the
steps no alive node can run. Pure mapping and fake `ray.nodes()` here; one slow test against a local Ray
instance that a helper process starts and shuts down (tests/fixtures/ray_head.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from bridge_helpers import COMMITTED_SCHEMAS, bare_manifest, bridge_env, run_runner, write_manifest

from bridge.cli import main
from bridge.manifest import load
from bridge.ray_executor import RayOptions
from bridge.ray_placement import GpuTooSmall, gpu_fraction, task_resources, unplaceable
from bridge.ray_validate import placement_problems
from bridge.resources import Resources
from bridge.runner import EXIT_INVALID

RAY_HEAD = Path(__file__).resolve().parent / "fixtures" / "ray_head.py"
#: Ray 2.60 makes a per-instance auth token that a second process would have to be handed; this instance is
#: local to the test and short-lived, so both sides go without.
NO_RAY_TOKEN = {"RAY_AUTH_MODE": "disabled"}


def _step(sid: str, resources: dict) -> dict:
    return {"id": sid, "worker": "bare", "args": {}, "resources": resources}


def test_a_share_of_one_gpu_is_rounded_up_to_hundredths():
    assert gpu_fraction(8, 80) == 0.1  # not 0.11: 8 / 80 * 100 is 10.000000000000002 in floating point
    assert gpu_fraction(10, 80) == 0.13  # 0.125 rounded up: shares never sum past the card
    assert gpu_fraction(80, 80) == 1.0
    assert gpu_fraction(0.1, 80) == 0.01  # the smallest share asked for
    with pytest.raises(GpuTooSmall, match="vram_gb 81 is more than one GPU of the cluster has"):
        gpu_fraction(81, 80)


def test_with_gpu_gb_a_one_gpu_step_with_vram_asks_for_its_share_and_the_rest_keep_whole_gpus():
    sdxl, vision = Resources(gpu=1, vram_gb=10), Resources(gpu=1, vram_gb=8)
    assert task_resources(sdxl, None, True, gpu_gb=80).ray_options()["num_gpus"] == 0.13
    assert task_resources(vision, None, True, gpu_gb=80).wanted() == {"CPU": 1, "GPU": 0.1}
    assert task_resources(sdxl, None, True).num_gpus == 1  # without --ray-gpu-gb: whole GPUs, as before
    assert task_resources(Resources(gpu=2, vram_gb=10), None, True, gpu_gb=80).num_gpus == 2
    assert task_resources(Resources(gpu=1), None, True, gpu_gb=80).num_gpus == 1  # no vram_gb: exclusive
    on_cpu = task_resources(sdxl, "cpu", cluster_has_gpus=False, gpu_gb=80)
    assert on_cpu.num_gpus == 0 and on_cpu.hide_gpus
    one_gpu = [{"Alive": True, "Resources": {"CPU": 2, "GPU": 1}}]
    assert unplaceable(task_resources(sdxl, None, True, gpu_gb=80).wanted(), one_gpu) is None


def test_a_run_refuses_a_step_whose_vram_is_more_than_one_gpu_before_connecting(tmp_path):
    path = write_manifest(tmp_path, bare_manifest([_step("big", {"gpu": 1, "vram_gb": 96})]))
    code, out, _ = run_runner(path, COMMITTED_SCHEMAS, executor="ray", ray=RayOptions(gpu_gb=80))
    assert code == EXIT_INVALID
    assert "[resources] step big: vram_gb 96 is more than one GPU of the cluster has (--ray-gpu-gb 80)" in out


def test_placement_problems_name_each_step_no_alive_node_can_run(tmp_path):
    m = load(write_manifest(tmp_path, bare_manifest([
        _step("share", {"gpu": 1, "vram_gb": 10}), _step("two", {"gpu": 2}), _step("x", {"custom": {"x": 2}})])))
    nodes = [{"Alive": True, "Resources": {"CPU": 4, "GPU": 1, "x": 1}},
             {"Alive": False, "Resources": {"CPU": 4, "GPU": 8, "x": 4}}]  # a dead node offers nothing
    problems = placement_problems(m, nodes, gpu_gb=80)
    assert problems == [
        "step two: no node of the Ray cluster (1 alive) offers what it asks for: `GPU` 2 (at most 1 on one node)",
        "step x: no node of the Ray cluster (1 alive) offers what it asks for: `x` 2 (at most 1 on one node)"]


def test_validate_against_ray_refuses_vram_past_one_gpu_without_asking_the_cluster(tmp_path, capsys):
    path = write_manifest(tmp_path, bare_manifest([_step("big", {"gpu": 1, "vram_gb": 96})]))
    # the address is never contacted: what --ray-gpu-gb rules out is known before connecting
    assert main(["validate", str(path), "--json", "--executor", "ray", "--ray-address", "127.0.0.1:1",
                 "--ray-gpu-gb", "80"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["errors"] == [{"path": "$", "type": "resources",
                              "message": "step big: vram_gb 96 is more than one GPU of the cluster has "
                                         "(--ray-gpu-gb 80)"}]


def test_validate_against_an_unreachable_cluster_is_a_setup_error(tmp_path, capsys):
    path = write_manifest(tmp_path, bare_manifest([_step("a", {"cpu": 1})]))
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["validate", str(path), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]) == 4
    assert f"[setup error] cannot reach the Ray cluster at 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture
def ray_head():
    """A one-node Ray instance (1 CPU, 1 logical GPU, custom `x` 1) in a helper process; its GCS address."""
    pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="rv", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen([sys.executable, str(RAY_HEAD), temp_dir,
                             json.dumps({"num_cpus": 1, "num_gpus": 1, "custom": {"x": 1}})],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **NO_RAY_TOKEN})
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        head.stdin.close()  # the helper shuts down the instance it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_validate_against_a_live_cluster_names_the_steps_no_node_can_run(tmp_path, ray_head):
    path = write_manifest(tmp_path, bare_manifest([
        _step("share", {"gpu": 1, "vram_gb": 10}), _step("two", {"gpu": 2}), _step("y", {"custom": {"y": 1}})]))
    # its own process: this pytest process never connects to Ray (tests/test_bridge_ray.py owns that)
    proc = subprocess.run([sys.executable, "-m", "bridge", "validate", str(path), "--executor", "ray",
                           "--ray-address", ray_head, "--ray-gpu-gb", "80"],
                          env={**bridge_env(COMMITTED_SCHEMAS), **NO_RAY_TOKEN},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cannot run on the Ray cluster" in proc.stderr
    assert "step two: no node of the Ray cluster (1 alive) offers what it asks for: `GPU` 2 (at most 1 on one node)" \
        in proc.stderr
    assert "step y: no node of the Ray cluster (1 alive) offers what it asks for: `y` 1 (no node has it)" in proc.stderr
    assert "step share" not in proc.stderr  # 0.13 of the one GPU fits
