"""What a step needs (`resources`), and the slots that hand it out: CPU slots (`--jobs`), memory, GPUs with a
per-GPU VRAM budget. Never oversubscribed: a request is granted whole or not at all.

A GPU request without `vram_gb` holds its devices exclusively. One with `vram_gb` shares a device with other
such requests while their sum stays within the device's budget; a device whose budget is unknown (`--gpus 0`
without `:GB`) is never shared.

An idle warm worker keeps its model in VRAM, so the warm pool *parks* its grant's GPU load here when a request
ends (`park`): it stays counted. A request of the same worker may take over a parked load on those devices
(`Grant.warm_token` names the process to reuse); any other request that only fits without parked loads has
them evicted first (`evict`, set by the warm pool, stops those idle processes) before it is granted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat


class Resources(BaseModel):
    """A step's needs, per attempt (per item of a foreach step)."""

    model_config = ConfigDict(extra="forbid")

    gpu: int = Field(default=0, ge=0, le=64, description="GPUs this step uses (given through CUDA_VISIBLE_DEVICES).")
    vram_gb: float | None = Field(default=None, gt=0, description="VRAM per GPU; without it a GPU is held exclusively.")
    cpu: int = Field(default=1, ge=1, le=1024, description="CPU slots (of --jobs) this step holds; capped at --jobs.")
    memory_gb: float | None = Field(default=None, gt=0, description="Host memory; the sum never exceeds the machine's.")
    custom: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Custom resources of a Ray cluster (`--executor ray` places the attempt on "
        "a node that offers them, e.g. {\"node_b\": 1}); the local executor ignores them.")


Fallback = Literal["cpu"]


#: Thread-count variables of the BLAS/OpenMP runtimes torch and friends use.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_env(cpu_slots: int, jobs: int, runner_env: dict[str, str]) -> dict[str, str]:
    """Threads for an attempt holding `cpu_slots` of `jobs` slots: its share of the cores.

    Two torch workers each spinning one thread per core on the same cores slow each other down many times over
    (measured: a tiny SDXL image 0.2 s alone, 2-9 s beside an LTX clip), so concurrent attempts split the cores.
    Nothing is set when attempts cannot overlap (`--jobs 1`) or the runner's environment already sets a count.
    """
    if jobs <= 1 or any(name in runner_env for name in THREAD_VARS):
        return {}
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    threads = str(max(1, cores * min(cpu_slots, jobs) // jobs))
    return dict.fromkeys(THREAD_VARS, threads)


@dataclass(frozen=True)
class Gpu:
    index: str
    vram_gb: float | None = None  # the budget; None: unknown (never shared)
    uuid: str | None = field(default=None, compare=False)  # `GPU-...`, to read CUDA_VISIBLE_DEVICES by UUID


@dataclass
class Grant:
    """What one attempt holds until it ends."""

    cpu: int
    memory_gb: float = 0.0
    gpus: tuple[str, ...] = ()
    vram_gb: float | None = None
    on_cpu: bool = False  # a GPU step run on CPU (`fallback: cpu`, no GPU on this machine)
    hide_gpus: bool = False  # the step declared resources without a GPU: it sees none
    warm_token: int | None = None  # the idle warm process whose parked load this grant took over

    @property
    def devices(self) -> list[str]:
        return [f"cuda:{g}" for g in self.gpus] or ["cpu"]

    def env(self) -> dict[str, str]:
        if self.gpus:  # indices as NVML and nvidia-smi number them (PCI order; CUDA's default is fastest first)
            return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}
        if self.on_cpu or self.hide_gpus:
            return {"CUDA_VISIBLE_DEVICES": ""}
        return {}


@dataclass(frozen=True)
class _Parked:
    """The GPU load of an idle warm process (its model is still in VRAM)."""

    worker: str
    gpus: tuple[str, ...]
    vram_gb: float | None


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
    evict: Callable[[list[int]], None] | None = None  # stops these parked idle processes (the warm pool's)
    _cpu_used: int = 0
    _memory_used: float = 0.0
    _loads: dict[str, _GpuLoad] = field(default_factory=dict)
    _parked: dict[int, _Parked] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # park/unpark come from attempt threads

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

    def try_acquire(self, req: Resources | None, worker: str | None = None) -> Grant | None:
        """A grant for `req` (an attempt of `worker`), or None. Idle warm processes whose parked load is in the
        way are evicted first when that makes it fit."""
        with self._lock:
            grant = self._acquire(req, worker)
            victims = [] if grant is not None or self.evict is None else self._unpark_victims(req)
        if not victims:
            return grant
        self.evict(victims)  # their loads are already released: stop the processes before the grant is used
        with self._lock:
            return self._acquire(req, worker)

    def _acquire(self, req: Resources | None, worker: str | None) -> Grant | None:
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
                grant.warm_token = self._claim(req, worker)
                chosen = self._parked_gpus(grant.warm_token) or self._pick_gpus(req)
                if chosen is None:
                    return None
                if grant.warm_token is not None:
                    self._unpark(grant.warm_token)
                grant.gpus, grant.vram_gb = chosen, req.vram_gb
                self._add_load(chosen, req.vram_gb)
        self._cpu_used += cpu
        self._memory_used += memory
        return grant

    def _add_load(self, gpus: tuple[str, ...], vram_gb: float | None) -> None:
        for index in gpus:
            load = self._loads[index]
            load.users += 1
            load.exclusive = vram_gb is None or load.gpu.vram_gb is None
            load.vram_used += vram_gb or 0.0

    def _remove_load(self, gpus: tuple[str, ...], vram_gb: float | None) -> None:
        for index in gpus:
            load = self._loads[index]
            load.users -= 1
            load.vram_used = max(0.0, load.vram_used - (vram_gb or 0.0))
            load.exclusive = False if load.users == 0 else load.exclusive

    def _pick_gpus(self, req: Resources, freed: tuple[_Parked, ...] = ()) -> tuple[str, ...] | None:
        free = [load for load in self._loads.values() if self._fits(load, req.vram_gb, freed)]
        if len(free) < req.gpu:
            return None
        free.sort(key=lambda load: (load.users, load.vram_used))  # spread: the least loaded devices first
        return tuple(load.gpu.index for load in free[:req.gpu])

    @staticmethod
    def _fits(load: _GpuLoad, vram_gb: float | None, freed: tuple[_Parked, ...] = ()) -> bool:
        """Whether `load`'s device takes `vram_gb` more, counting the parked loads `freed` as gone."""
        gone = [p for p in freed if load.gpu.index in p.gpus]
        users = load.users - len(gone)
        used = load.vram_used - sum(p.vram_gb or 0.0 for p in gone)
        if load.exclusive and users > 0:
            return False
        if vram_gb is None or load.gpu.vram_gb is None:
            return users == 0
        return used + vram_gb <= load.gpu.vram_gb

    # idle warm processes ----------------------------------------------------------------------------------
    def park(self, token: int, worker: str, grant: Grant) -> None:
        """An attempt of `worker` ended and its process stays, idle, with its model on `grant.gpus`."""
        if grant.gpus:
            with self._lock:
                self._parked[token] = _Parked(worker, grant.gpus, grant.vram_gb)
                self._add_load(grant.gpus, grant.vram_gb)

    def unpark(self, token: int) -> None:
        """The idle process `token` is busy again (its grant counts it now) or gone."""
        with self._lock:
            self._unpark(token)

    def _unpark(self, token: int) -> None:
        parked = self._parked.pop(token, None)
        if parked is not None:
            self._remove_load(parked.gpus, parked.vram_gb)

    def _parked_gpus(self, token: int | None) -> tuple[str, ...] | None:
        return self._parked[token].gpus if token is not None else None

    def _claim(self, req: Resources, worker: str | None) -> int | None:
        """A parked process of `worker` on as many devices as `req` needs, where `req` fits once it is gone."""
        for token, parked in self._parked.items():
            if parked.worker == worker and len(parked.gpus) == req.gpu and all(
                    self._fits(self._loads[g], req.vram_gb, (parked,)) for g in parked.gpus):
                return token
        return None

    def _unpark_victims(self, req: Resources | None) -> list[int]:
        """The parked processes to stop so that `req` fits (none when it would not fit even then)."""
        if req is None or not req.gpu or not self.gpus or not self._parked:
            return []
        cpu, memory = min(req.cpu, self.jobs), req.memory_gb or 0.0
        if self._cpu_used + cpu > self.jobs or (
                memory and self.memory_gb is not None and self._memory_used + memory > self.memory_gb):
            return []
        chosen = self._pick_gpus(req, tuple(self._parked.values()))
        if chosen is None:
            return []
        victims = [t for t, p in self._parked.items() if set(p.gpus) & set(chosen)]
        for token in victims:
            self._unpark(token)
        return victims

    def release(self, grant: Grant) -> None:
        with self._lock:
            self._cpu_used -= grant.cpu
            self._memory_used -= grant.memory_gb
            self._remove_load(grant.gpus, grant.vram_gb)

    @property
    def cpu_free(self) -> bool:
        return self._cpu_used < self.jobs
