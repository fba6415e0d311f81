"""What this machine offers a manifest: the slot pool (--jobs, GPUs, memory), and the steps it can never
start (`validate` and `run` refuse those before anything runs)."""

from __future__ import annotations

from .gpus import GpuSpecInvalid, detect_gpus
from .manifest import LoadedManifest
from .ray_placement import gpu_share_problems
from .resources import Gpu, SlotPool


class ResourcesImpossible(Exception):
    """A step asks for more than this machine has (or for a GPU where there is none, without a fallback)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def slot_pool(m: LoadedManifest, jobs: int, gpus: list[Gpu] | None, env: dict[str, str]) -> SlotPool:
    """The pool for this run; GPUs are detected (NVML, nvidia-smi) only when `gpus` is None and a step wants
    one. Raises ResourcesImpossible naming every step that could never start."""
    wants_gpu = any(s.resources and s.resources.gpu for s in m.steps.values())
    if gpus is None:
        try:
            gpus = detect_gpus(env) if wants_gpu else []
        except GpuSpecInvalid as exc:
            raise ResourcesImpossible([str(exc)]) from None
    pool = SlotPool(jobs=max(1, jobs), gpus=gpus, memory_gb=_memory_gb(m))
    problems = [f"step {s.id}: {why}" for s in m.steps.values() if (why := pool.impossible(s.resources, s.fallback))]
    if problems:
        raise ResourcesImpossible(problems)
    return pool


def cluster_slot_pool(m: LoadedManifest, jobs: int, gpu_gb: float | None = None) -> SlotPool:
    """`--executor ray`: the head bounds only how many attempts are in flight (--jobs); GPUs, memory and custom
    resources are placed by the cluster, and a request no node can meet fails at placement, per attempt. Only
    a step whose `vram_gb` is more than one GPU of the fleet (`gpu_gb`, --ray-gpu-gb) is refused here."""
    problems = gpu_share_problems(m.steps.values(), gpu_gb)
    if problems:
        raise ResourcesImpossible(problems)
    return SlotPool(jobs=max(1, jobs))


def resource_problems(m: LoadedManifest, gpus: list[Gpu] | None, env: dict[str, str]) -> list[str]:
    try:
        slot_pool(m, 1, gpus, env)
    except ResourcesImpossible as exc:
        return exc.problems
    return []


def _memory_gb(m: LoadedManifest) -> float | None:
    """The machine's memory, when some step declares `memory_gb` (else memory is not a slot)."""
    if not any(s.resources and s.resources.memory_gb for s in m.steps.values()):
        return None
    import psutil

    return psutil.virtual_memory().total / 1024**3
