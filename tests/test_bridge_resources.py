"""Slots and GPUs as pure bookkeeping: never oversubscribed, whatever the order of requests and releases;
GPU discovery without torch (`--gpus`, nvidia-smi)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.gpus import GpuSpecInvalid, detect_gpus, parse_gpus
from bridge.resources import THREAD_VARS, Gpu, Grant, Resources, SlotPool, thread_env

requests = st.builds(Resources, gpu=st.integers(0, 2), vram_gb=st.none() | st.sampled_from([4.0, 6.0, 10.0]),
                     cpu=st.integers(1, 3), memory_gb=st.none() | st.sampled_from([1.0, 3.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(requests, st.booleans()), max_size=40))
def test_slots_are_never_oversubscribed(ops):
    pool = SlotPool(jobs=4, gpus=[Gpu("0", 10.0), Gpu("1", None)], memory_gb=4.0)
    held = []
    for req, release_first in ops:
        if release_first and held:
            pool.release(held.pop(0)[1])
        grant = pool.try_acquire(req)
        if grant is not None:
            held.append((req, grant))
        assert sum(g.cpu for _, g in held) <= 4
        assert sum(g.memory_gb for _, g in held) <= 4.0
        on = {"0": [], "1": []}
        for r, g in held:
            assert len(g.gpus) == r.gpu
            for index in g.gpus:
                on[index].append(r)
        for index, users in on.items():
            if any(r.vram_gb is None for r in users) or index == "1":  # exclusive, or a budget unknown
                assert len(users) <= 1, (index, users)
            else:
                assert sum(r.vram_gb for r in users) <= 10.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(requests, st.sampled_from(["w1", "w2"]), st.booleans()), max_size=40))
def test_idle_warm_processes_count_until_evicted_and_are_never_oversubscribed(ops):
    """A released grant may stay parked (an idle warm process); held and parked loads together fit."""
    pool = SlotPool(jobs=4, gpus=[Gpu("0", 10.0), Gpu("1", None)])
    parked: dict[int, Grant] = {}
    pool.evict = lambda tokens: [parked.pop(t) for t in tokens]
    held: list[Grant] = []
    for token, (req, worker, release_first) in enumerate(ops):
        if release_first and held:
            done = held.pop(0)
            pool.park(token, worker, done)
            pool.release(done)
            parked[token] = done
        grant = pool.try_acquire(req, worker)
        if grant is not None:
            parked.pop(grant.warm_token, None)  # taken over
            held.append(grant)
        on: dict[str, list[Grant]] = {"0": [], "1": []}
        for g in held + [g for g in parked.values() if g.gpus]:
            for index in g.gpus:
                on[index].append(g)
        for index, users in on.items():
            if any(g.vram_gb is None for g in users) or index == "1":
                assert len(users) <= 1, (index, users)
            else:
                assert sum(g.vram_gb for g in users) <= 10.0


def test_a_grant_names_its_devices_in_the_environment():
    pool = SlotPool(jobs=2, gpus=[Gpu("3")])
    grant = pool.try_acquire(Resources(gpu=1))
    assert grant.env() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "3"}  # NVML's numbering
    assert grant.devices == ["cuda:3"]
    assert pool.try_acquire(Resources(gpu=1)) is None  # exclusive
    assert pool.try_acquire(Resources(cpu=1)).env() == {"CUDA_VISIBLE_DEVICES": ""}  # declared, no GPU
    assert pool.try_acquire(None) is None  # --jobs 2: both slots are taken


@pytest.mark.parametrize(("spec", "gpus"), [("0,1", [Gpu("0"), Gpu("1")]), ("0:24, 2:80", [Gpu("0", 24.0), Gpu("2", 80.0)]),
                                            ("none", [])])
def test_gpu_specs(spec, gpus):
    assert parse_gpus(spec) == gpus


@pytest.mark.parametrize("spec", ["a", "0,0", "0:x", "0:-1", "", "0:inf", "0:nan"])
def test_bad_gpu_specs(spec):
    with pytest.raises(GpuSpecInvalid):
        parse_gpus(spec)


def test_gpus_come_from_nvidia_smi_narrowed_by_cuda_visible_devices(tmp_path: Path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, GPU-aaaa-1111, 24576'\necho '1, GPU-bbbb-2222, 81559'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("bridge.gpus._nvml_importable", lambda: False)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    monkeypatch.setenv("PATH", env["PATH"])
    assert detect_gpus(env) == [Gpu("0", 24.0), Gpu("1", 79.6)]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "1"}) == [Gpu("1", 79.6)]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "GPU-bbbb-2222,GPU-aaaa"}) == [Gpu("1", 79.6), Gpu("0", 24.0)]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "-1"}) == []
    with pytest.raises(GpuSpecInvalid, match="MIG-x.*--gpus"):
        detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "MIG-x"})
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert detect_gpus({}) == []


def test_a_waiting_multi_gpu_request_is_not_overtaken_by_smaller_gpu_requests():
    from bridge.scheduler import Scheduler

    sched = Scheduler(SlotPool(jobs=4, gpus=parse_gpus("0,1")))
    one, two = Resources(gpu=1), Resources(gpu=2)
    for node, req in [("small0", one), ("small1", one), ("big", two), ("small2", one), ("cpu", Resources())]:
        sched.enqueue(node, req, now=0.0)
    started = {}
    while (got := sched.take_startable(0.0)) is not None:
        started[got[0]] = got[1]
    assert set(started) == {"small0", "small1", "cpu"}  # CPU-only work still goes past the waiting GPU request
    sched.release(started.pop("small0"))
    assert sched.take_startable(0.0) is None  # the freed GPU is kept for `big`, not given to small2
    sched.release(started.pop("small1"))
    assert sched.take_startable(0.0)[0] == "big"


def test_concurrent_attempts_split_the_cores_unless_the_runner_env_says_otherwise(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert thread_env(1, 4, {}) == dict.fromkeys(THREAD_VARS, "2")
    assert thread_env(3, 4, {}) == dict.fromkeys(THREAD_VARS, "6")
    assert thread_env(1, 16, {}) == dict.fromkeys(THREAD_VARS, "1")  # never 0
    assert thread_env(1, 1, {}) == {}  # one attempt at a time: the worker's own default (all cores)
    assert thread_env(1, 4, {"OMP_NUM_THREADS": "3"}) == {}  # the user's choice stands


def test_attempts_run_concurrently_get_their_share_of_threads(tmp_path):
    from bridge_helpers import bare_manifest, run_runner, schema_dir, state_rows, write_manifest

    step = {"worker": "bare", "args": {"env_keys": ["OMP_NUM_THREADS", "MKL_NUM_THREADS"]}}
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", **step}, {"id": "b", **step}]))
    code, out, _ = run_runner(m, schema_dir(tmp_path), jobs=2)
    assert code == 0, out
    expected = thread_env(1, 2, {})["OMP_NUM_THREADS"]
    for sid in ("a", "b"):
        env = json.loads(state_rows(tmp_path / "t.work", f"SELECT result FROM steps WHERE step_id = '{sid}'")[0][0])["env"]
        assert env == {"OMP_NUM_THREADS": expected, "MKL_NUM_THREADS": expected}
