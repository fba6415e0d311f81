"""`validate --executor ray`: the steps no alive node of the Ray cluster can ever run, each with the message its
attempt would fail with at placement (bridge/ray_placement.py). Ray is imported only by `cluster_problems`."""

from __future__ import annotations

from typing import Any

from .manifest import LoadedManifest
from .ray_executor import RayOptions, connect
from .ray_placement import cluster_has_gpus, gpu_share_problems, task_resources, unplaceable


def cluster_problems(m: LoadedManifest, options: RayOptions) -> list[str]:
    """Connects to the cluster as a run would (raises ray_executor.RayUnavailable when it cannot), reads its
    nodes once and disconnects again when this call made the connection."""
    problems = gpu_share_problems(m.steps.values(), options.gpu_gb)
    if problems:  # known without asking the cluster
        return problems
    owned = connect(options)
    import ray

    try:
        nodes = ray.nodes()
    finally:
        if owned:
            ray.shutdown()
    return placement_problems(m, nodes, options.gpu_gb)


def placement_problems(m: LoadedManifest, nodes: list[dict[str, Any]], gpu_gb: float | None) -> list[str]:
    """`step ID: why` for each step whose resources no alive node in `nodes` (`ray.nodes()`) offers."""
    has_gpus = cluster_has_gpus(nodes)
    problems = []
    for step in m.steps.values():
        need = task_resources(step.resources, step.fallback, has_gpus, gpu_gb=gpu_gb)
        why = unplaceable(need.wanted(), nodes)
        if why is not None:
            problems.append(f"step {step.id}: {why}")
    return problems
