"""What a step asks of a Ray cluster (num_cpus, num_gpus, memory, custom resources, from its `resources`), and
why no node can ever give it that: the message a task that cannot be placed fails with. Ray itself would wait
forever for a node that has the resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .resources import Fallback, Resources

_GIB = 1024**3


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

    def wanted(self) -> dict[str, float]:
        """As Ray names node resources (`ray.nodes()[i]["Resources"]`)."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory_bytes or 0, **self.custom}
        return {name: amount for name, amount in wanted.items() if amount}


def task_resources(req: Resources | None, fallback: Fallback | None, cluster_has_gpus: bool) -> TaskResources:
    """A step without `resources` takes one CPU (Ray's default); a GPU step with `fallback: cpu` runs without
    a GPU only when the cluster has none at all."""
    if req is None:
        return TaskResources()
    gpus = req.gpu if cluster_has_gpus or fallback != "cpu" else 0
    memory = int(req.memory_gb * _GIB) if req.memory_gb else None
    return TaskResources(num_cpus=req.cpu, num_gpus=gpus, memory_bytes=memory, custom=dict(req.custom),
                         hide_gpus=not gpus)


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
