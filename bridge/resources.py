"""What a step needs (`resources`), and the slots that hand it out: CPU slots (`--jobs`), memory, GPUs with a
per-GPU VRAM budget. Never oversubscribed: a request is granted whole or not at all.

A GPU request without `vram_gb` holds its devices exclusively. One with `vram_gb` shares a device with other
such requests while their sum stays within the device's budget; a device whose budget is unknown (`--gpus 0`
without `:GB`) is never shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """A step's needs, per attempt (per item of a foreach step)."""

    model_config = ConfigDict(extra="forbid")

    gpu: int = Field(default=0, ge=0, le=64, description="GPUs this step uses (given through CUDA_VISIBLE_DEVICES).")
    vram_gb: float | None = Field(default=None, gt=0, description="VRAM per GPU; without it a GPU is held exclusively.")
    cpu: int = Field(default=1, ge=1, le=1024, description="CPU slots (of --jobs) this step holds; capped at --jobs.")
    memory_gb: float | None = Field(default=None, gt=0, description="Host memory; the sum never exceeds the machine's.")


Fallback = Literal["cpu"]


@dataclass(frozen=True)
class Gpu:
    index: str
    vram_gb: float | None = None  # the budget; None: unknown (never shared)


@dataclass
class Grant:
    """What one attempt holds until it ends."""

    cpu: int
    memory_gb: float = 0.0
    gpus: tuple[str, ...] = ()
    vram_gb: float | None = None
    on_cpu: bool = False  # a GPU step run on CPU (`fallback: cpu`, no GPU on this machine)
    hide_gpus: bool = False  # the step declared resources without a GPU: it sees none

    @property
    def devices(self) -> list[str]:
        return [f"cuda:{g}" for g in self.gpus] or ["cpu"]

    def env(self) -> dict[str, str]:
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}
        if self.on_cpu or self.hide_gpus:
            return {"CUDA_VISIBLE_DEVICES": ""}
        return {}


@dataclass
class _GpuLoad:
    gpu: Gpu
    users: int = 0
    exclusive: bool = False
    vram_used: float = 0.0


@dataclass
class SlotPool:
    jobs: int
    gpus: list[Gpu] = field(default_factory=list)
    memory_gb: float | None = None  # the machine's; None: not limited
    _cpu_used: int = 0
    _memory_used: float = 0.0
    _loads: dict[str, _GpuLoad] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._loads = {g.index: _GpuLoad(g) for g in self.gpus}

    def impossible(self, req: Resources | None, fallback: Fallback | None) -> str | None:
        """Why `req` can never be granted on this machine (validate/run refuse the manifest), or None."""
        if req is None:
            return None
        if req.memory_gb and self.memory_gb is not None and req.memory_gb > self.memory_gb:
            return f"needs {req.memory_gb:g} GB of memory; this machine has {self.memory_gb:.1f} GB"
        if not req.gpu:
            return None
        if not self.gpus:
            return None if fallback == "cpu" else (f"needs {req.gpu} GPU(s) and none was found (--gpus, NVML, "
                                                   "nvidia-smi); add `fallback: \"cpu\"` to let it run on CPU")
        if req.gpu > len(self.gpus):
            return f"needs {req.gpu} GPUs; only {len(self.gpus)} available ({', '.join(g.index for g in self.gpus)})"
        if req.vram_gb:
            fitting = [g for g in self.gpus if g.vram_gb is None or g.vram_gb >= req.vram_gb]
            if len(fitting) < req.gpu:
                return f"needs {req.vram_gb:g} GB of VRAM on {req.gpu} GPU(s); the budgets are " + ", ".join(
                    f"{g.index}: {g.vram_gb:g} GB" for g in self.gpus if g.vram_gb is not None)
        return None

    def try_acquire(self, req: Resources | None) -> Grant | None:
        cpu = min(req.cpu if req else 1, self.jobs)
        if self._cpu_used + cpu > self.jobs:
            return None
        memory = (req.memory_gb or 0.0) if req else 0.0
        if memory and self.memory_gb is not None and self._memory_used + memory > self.memory_gb:
            return None
        grant = Grant(cpu=cpu, memory_gb=memory, hide_gpus=req is not None and not req.gpu)
        if req is not None and req.gpu:
            if not self.gpus:
                grant.on_cpu = True  # `impossible` refused the manifest unless fallback is cpu
            else:
                chosen = self._pick_gpus(req)
                if chosen is None:
                    return None
                grant.gpus, grant.vram_gb = chosen, req.vram_gb
                for index in chosen:
                    load = self._loads[index]
                    load.users += 1
                    load.exclusive = req.vram_gb is None or load.gpu.vram_gb is None
                    load.vram_used += req.vram_gb or 0.0
        self._cpu_used += cpu
        self._memory_used += memory
        return grant

    def _pick_gpus(self, req: Resources) -> tuple[str, ...] | None:
        free = [load for load in self._loads.values() if self._fits(load, req.vram_gb)]
        if len(free) < req.gpu:
            return None
        free.sort(key=lambda load: (load.users, load.vram_used))  # spread: the least loaded devices first
        return tuple(load.gpu.index for load in free[:req.gpu])

    @staticmethod
    def _fits(load: _GpuLoad, vram_gb: float | None) -> bool:
        if load.exclusive:
            return False
        if vram_gb is None or load.gpu.vram_gb is None:
            return load.users == 0
        return load.vram_used + vram_gb <= load.gpu.vram_gb

    def release(self, grant: Grant) -> None:
        self._cpu_used -= grant.cpu
        self._memory_used -= grant.memory_gb
        for index in grant.gpus:
            load = self._loads[index]
            load.users -= 1
            load.vram_used = max(0.0, load.vram_used - (grant.vram_gb or 0.0))
            load.exclusive = False if load.users == 0 else load.exclusive

    @property
    def cpu_free(self) -> bool:
        return self._cpu_used < self.jobs
