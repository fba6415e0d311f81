"""The Ray executor's parts that need no cluster: shipping files (mode `ship`), what a step asks of Ray and why
it cannot be placed, the worker's environment on a node, that the bridge never imports Ray unless asked, and
that a cluster it cannot use is a setup error."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys

import pytest
from bridge_helpers import COMMITTED_SCHEMAS, bare_manifest, bridge_env, write_manifest

from bridge import ray_data
from bridge.ray_placement import task_resources, unplaceable
from bridge.ray_task import node_env
from bridge.resources import Resources


def _ship(src, dst, chunk_bytes: int) -> dict:
    sink = ray_data.StagingSink(dst)
    for rel, data in ray_data.chunks(src, ray_data.output_files(src), chunk_bytes):
        assert len(data) <= chunk_bytes
        sink.write(rel, data)
    return sink.close()


def test_outputs_travel_in_bounded_chunks_and_verify(tmp_path):
    src, dst = tmp_path / "node", tmp_path / "staging"
    (src / "sub").mkdir(parents=True)
    dst.mkdir()
    big = bytes(range(256)) * 40  # 10 KiB: several chunks
    (src / "sub" / "clip.bin").write_bytes(big)
    (src / "empty.txt").write_bytes(b"")
    received = _ship(src, dst, chunk_bytes=1000)
    assert (dst / "sub" / "clip.bin").read_bytes() == big and (dst / "empty.txt").read_bytes() == b""
    outputs = [{"path": str(dst / "sub" / "clip.bin"), "bytes": len(big), "sha256": hashlib.sha256(big).hexdigest()},
               {"path": str(dst / "empty.txt"), "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}]
    assert ray_data.check_received(outputs, dst, received) == []


def test_a_shipped_output_that_differs_from_the_envelope_is_refused(tmp_path):
    src, dst = tmp_path / "node", tmp_path / "staging"
    src.mkdir()
    dst.mkdir()
    (src / "a.txt").write_bytes(b"what arrived")
    received = _ship(src, dst, chunk_bytes=4)
    wrong_sha = [{"path": str(dst / "a.txt"), "bytes": 12, "sha256": hashlib.sha256(b"what was said").hexdigest()}]
    wrong_size = [{"path": str(dst / "a.txt"), "bytes": 13, "sha256": "0" * 64}]
    missing = [{"path": str(dst / "b.txt"), "bytes": 1, "sha256": "0" * 64}]
    outside = [{"path": str(tmp_path / "a.txt"), "bytes": 1, "sha256": "0" * 64}]
    assert "sha256" in ray_data.check_received(wrong_sha, dst, received)[0]
    assert "13" in ray_data.check_received(wrong_size, dst, received)[0]
    assert "did not arrive" in ray_data.check_received(missing, dst, received)[0]
    assert "outside" in ray_data.check_received(outside, dst, received)[0]


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_a_chunk_named_outside_the_staging_dir_is_refused(tmp_path, rel):
    with pytest.raises(ray_data.ShipError):
        ray_data.StagingSink(tmp_path).write(rel, b"x")


def test_input_files_named_in_args_are_found_and_rewritten(tmp_path):
    (tmp_path / "in.wav").write_bytes(b"RIFF")
    (tmp_path / "d").mkdir()
    args = {"audio_path": "in.wav", "nested": [{"p": str(tmp_path / "in.wav")}], "dir": "d", "text": "hello",
            "output_dir": str(tmp_path / "in.wav")}
    found = ray_data.input_files(args, tmp_path)
    assert found == {"in.wav": tmp_path / "in.wav", str(tmp_path / "in.wav"): tmp_path / "in.wav"}
    placed = ray_data.place_inputs(tmp_path / "node", {t: p.read_bytes() for t, p in found.items()})
    rewritten = ray_data.rewrite_args(args, placed)
    assert rewritten["audio_path"].endswith("/in.wav") and rewritten["audio_path"] != "in.wav"
    assert open(rewritten["audio_path"], "rb").read() == b"RIFF"
    assert rewritten["text"] == "hello" and rewritten["dir"] == "d"


def test_a_step_asks_ray_for_its_declared_resources():
    need = task_resources(Resources(gpu=1, cpu=4, memory_gb=2, custom={"node_b": 1}), None, cluster_has_gpus=True)
    assert need.ray_options() == {"num_cpus": 4, "num_gpus": 1, "memory": 2 * 1024**3, "resources": {"node_b": 1}}
    assert need.threads == 4 and not need.hide_gpus
    assert task_resources(None, None, True).ray_options() == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources(Resources(cpu=2), None, True).hide_gpus
    on_cpu = task_resources(Resources(gpu=1), "cpu", cluster_has_gpus=False)  # fallback: only without any GPU
    assert on_cpu.num_gpus == 0 and on_cpu.hide_gpus
    assert task_resources(Resources(gpu=1), "cpu", cluster_has_gpus=True).num_gpus == 1


def test_why_a_task_cannot_be_placed_names_the_missing_resource():
    nodes = [{"Alive": True, "Resources": {"CPU": 2, "GPU": 2}}, {"Alive": True, "Resources": {"CPU": 1, "b": 1}},
             {"Alive": False, "Resources": {"CPU": 64, "GPU": 8, "big": 1}}]
    assert unplaceable({"CPU": 1, "GPU": 2}, nodes) is None  # fits (busy or not)
    assert "`big` 1 (no node has it)" in unplaceable({"CPU": 1, "big": 1}, nodes)
    assert "`GPU` 4 (at most 2 on one node)" in unplaceable({"CPU": 1, "GPU": 4}, nodes)
    assert "no single node has all of" in unplaceable({"GPU": 1, "b": 1}, nodes)
    assert "`memory` 2 GB (at most 1 GB" in unplaceable({"memory": 2 * 1024**3}, [
        {"Alive": True, "Resources": {"memory": 1024**3}}])


def test_the_worker_on_a_node_gets_the_runners_env_with_rays_gpus_and_the_declared_threads(monkeypatch):
    spec = {"env": {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                    "OMP_NUM_THREADS": "1"}, "num_gpus": 1, "hide_gpus": False, "threads": 3}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what Ray set for this task
    env = node_env(spec)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and "CUDA_DEVICE_ORDER" not in env and env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"  # not Ray's 1
    assert node_env({**spec, "num_gpus": 0, "hide_gpus": True})["CUDA_VISIBLE_DEVICES"] == ""
    assert node_env({**spec, "num_gpus": 0})["CUDA_VISIBLE_DEVICES"] == "0,1"  # no resources: as locally


def test_the_bridge_imports_no_ray_by_default(tmp_path):
    path = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {}}]))
    code = ("import sys; from bridge import cli; rc = cli.main(['run', sys.argv[1], '--quiet']); "
            "assert rc == 0, rc; assert 'ray' not in sys.modules, 'ray was imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=bridge_env(COMMITTED_SCHEMAS),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("address", ["refused", "silent", "ray://127.0.0.1:10001"])
def test_a_cluster_that_cannot_be_used_is_a_setup_error_not_a_hang(tmp_path, address):
    pytest.importorskip("ray")
    path = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {}}]))
    with socket.socket() as sock:  # ray.init would wait for minutes at either address
        sock.bind(("127.0.0.1", 0))
        if address == "silent":
            sock.listen()  # it accepts connections and never says a word
        kind, address = address, address if "://" in address else f"127.0.0.1:{sock.getsockname()[1]}"
        proc = subprocess.run([sys.executable, "-m", "bridge", "run", str(path), "--executor", "ray",
                               "--ray-address", address, "--ray-connect-timeout-s", "3", "--quiet"],
                              env=bridge_env(COMMITTED_SCHEMAS), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    expected = {"refused": f"cannot reach the Ray cluster at {address}: [Errno 111] Connection refused",
                "silent": f"cannot reach the Ray cluster at {address}: no answer within --ray-connect-timeout-s 3",
                "ray://127.0.0.1:10001": "Ray Client (ray://) cannot carry the streams"}[kind]
    assert expected in out
    assert not (tmp_path / "t.work" / "steps" / "a").exists()
