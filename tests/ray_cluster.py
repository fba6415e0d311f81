"""A local 2-node Ray cluster for the `--executor ray` tests, one per test module (its module-scoped `cluster`
fixture does `yield from two_nodes()`): the head with 2 CPUs and 2 logical GPUs, a second node with 1 CPU and a
custom resource `node_b`."""

from __future__ import annotations

import os
from pathlib import Path

import ray
from ray.cluster_utils import Cluster


def two_nodes():
    """Generator for a module-scoped fixture: `yield from two_nodes()`."""
    env_before = os.environ.get("PYTHONPATH")
    # The nodes' Ray workers import this checkout's bridge (the tests' own import path).
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env_before or ""])
    # A lost node is noticed after about a second, not Ray's default of tens of seconds.
    fast_health_checks = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                          "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, connect=True,
                head_node_args={"num_cpus": 2, "num_gpus": 2, "_system_config": fast_health_checks})
    c.add_node(num_cpus=1, resources={"node_b": 1})
    c.wait_for_nodes()
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
