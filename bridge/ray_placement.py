"""What a step asks of a Ray cluster (num_cpus, num_gpus, memory, custom resources, from its `resources`), and
why no node can ever give it that: the message a task that cannot be placed fails with. Ray itself would wait
forever for a node that has the resources."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .manifest import Step
from .resources import Fallback, Resources

_GIB = 1024**3


class GpuTooSmall(ValueError):
    """A one-GPU step asks for more VRAM than one GPU of the cluster has (--ray-gpu-gb)."""


@dataclass
class TaskResources:
    num_cpus: float = 1
    num_gpus: float = 0
    memory_bytes: int | None = None
    custom: dict[str, float] = field(default_factory=dict)
    hide_gpus: bool = False  # resources declared without a GPU: the worker sees none

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        return options

    def held_by_actor(self) -> dict[str, float]:
        """What a warm actor of this step holds while it lives, idle or not: all it asks for but CPUs
        (bridge/ray_warm.py); so all that evicting an idle actor can free."""
        return {name: amount for name, amount in self.wanted().items() if name != "CPU"}

    def wanted(self) -> dict[str, float]:
        """As Ray names node resources (`ray.nodes()[i]["Resources"]`)."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory_bytes or 0, **self.custom}
        return {name: amount for name, amount in wanted.items() if amount}


def task_resources(req: Resources | None, fallback: Fallback | None, cluster_has_gpus: bool, *,
                   gpu_gb: float | None = None) -> TaskResources:
    """A step without `resources` takes one CPU (Ray's default); a GPU step with `fallback: cpu` runs without
    a GPU only when the cluster has none at all. With `gpu_gb` (--ray-gpu-gb, the memory of one GPU of the
    fleet) a one-GPU step with `vram_gb` asks for its share of a GPU (`gpu_fraction`), so steps that fit
    together on one card share it on Ray as they do locally; any other GPU step keeps whole GPUs."""
    if req is None:
        return TaskResources()
    gpus: float = req.gpu if cluster_has_gpus or fallback != "cpu" else 0
    if gpus == 1 and req.vram_gb and gpu_gb:
        gpus = gpu_fraction(req.vram_gb, gpu_gb)
    memory = int(req.memory_gb * _GIB) if req.memory_gb else None
    return TaskResources(num_cpus=req.cpu, num_gpus=gpus, memory_bytes=memory, custom=dict(req.custom),
                         hide_gpus=not gpus)


def gpu_fraction(vram_gb: float, gpu_gb: float) -> float:
    """The share of one `gpu_gb` GPU that `vram_gb` takes, rounded UP to 1/100 (Ray counts 1/10000; hundredths
    stay readable, and rounding up never lets shares sum past the card). Raises GpuTooSmall when it needs more
    than one GPU: a one-GPU step cannot spread its memory over two cards."""
    if vram_gb > gpu_gb:
        raise GpuTooSmall(f"vram_gb {vram_gb:g} is more than one GPU of the cluster has (--ray-gpu-gb {gpu_gb:g})")
    # round() first: 8 / 80 * 100 is 10.000000000000002 in floating point, which ceil would make 11
    return max(0.01, math.ceil(round(vram_gb / gpu_gb * 100, 6)) / 100)


def gpu_share_problems(steps: Iterable[Step], gpu_gb: float | None) -> list[str]:
    """The steps that `--ray-gpu-gb` makes impossible (their `vram_gb` exceeds one GPU): refused before a run
    starts and by `validate`, as the local runner refuses a step that needs more than this machine has."""
    if not gpu_gb:
        return []
    problems = []
    for step in steps:
        req = step.resources
        if req is not None and req.gpu == 1 and req.vram_gb:
            try:
                gpu_fraction(req.vram_gb, gpu_gb)
            except GpuTooSmall as exc:
                problems.append(f"step {step.id}: {exc}")
    return problems


def cluster_has_gpus(nodes: list[dict[str, Any]]) -> bool:
    """Whether some alive node of `ray.nodes()` offers a GPU (else `fallback: cpu` steps run without one)."""
    return any(n.get("Alive") and (n.get("Resources") or {}).get("GPU") for n in nodes)


def unplaceable(wanted: dict[str, float], nodes: list[dict[str, Any]]) -> str | None:
    """Why no alive node can ever run a task asking for `wanted` (None when one can, busy or not)."""
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive")]
    if any(all(offer.get(name, 0) >= amount for name, amount in wanted.items()) for offer in alive):
        return None
    short = []
    for name, amount in wanted.items():
        most = max((offer.get(name, 0) for offer in alive), default=0)
        if most < amount:
            have = "no node has it" if not most else f"at most {_amount(name, most)} on one node"
            short.append(f"`{name}` {_amount(name, amount)} ({have})")
    if not short:
        short.append("no single node has all of " + ", ".join(f"`{n}` {_amount(n, a)}" for n, a in wanted.items()))
    return f"no node of the Ray cluster ({len(alive)} alive) offers what it asks for: " + "; ".join(short)


def _amount(name: str, value: float) -> str:
    return f"{value / _GIB:g} GB" if name == "memory" else f"{value:g}"
