"""Which GPUs the runner may hand out: `--gpus`, else NVML (nvidia-ml-py), else `nvidia-smi`. Never torch."""

from __future__ import annotations

import math
import os
import subprocess

from .resources import Gpu


class GpuSpecInvalid(ValueError):
    pass


def parse_gpus(spec: str) -> list[Gpu]:
    """`0,1`, `0:24,1:24` (index:VRAM budget in GB) or `none`."""
    if spec.strip().lower() == "none":
        return []
    gpus = []
    for part in spec.split(","):
        index, _, vram = part.strip().partition(":")
        if not index.isdigit():
            raise GpuSpecInvalid(f"--gpus: {part!r} is not INDEX or INDEX:GB (e.g. 0,1 or 0:24,1:24 or none)")
        try:
            budget = float(vram) if vram else None
        except ValueError:
            raise GpuSpecInvalid(f"--gpus: {vram!r} in {part!r} is not a number of GB") from None
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise GpuSpecInvalid(f"--gpus: the VRAM budget in {part!r} must be a positive number of GB")
        gpus.append(Gpu(index, budget))
    if len({g.index for g in gpus}) != len(gpus):
        raise GpuSpecInvalid(f"--gpus: {spec!r} names a GPU twice")
    return gpus


def detect_gpus(env: dict[str, str] | None = None) -> list[Gpu]:
    """The machine's GPUs with their memory, limited to CUDA_VISIBLE_DEVICES when the runner got one (indices
    or `GPU-` UUIDs, or prefixes of them, as CUDA reads it). Raises GpuSpecInvalid for an entry that names
    nothing found, such as a MIG instance: a silent "no GPU" would mislead."""
    found = _nvml() if _nvml_importable() else None
    if found is None:
        found = _nvidia_smi()
    visible = (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    chosen: list[Gpu] = []
    for entry in (v.strip() for v in visible.split(",")):
        if not entry or entry.startswith("-"):  # "-1": CUDA reads no further
            break
        match = [g for g in found if g.index == entry or (g.uuid and g.uuid.startswith(entry))]
        if entry.isdigit():
            chosen += match  # an index this machine lacks: CUDA ignores it too
        elif len(match) == 1:
            chosen += match
        else:
            raise GpuSpecInvalid(
                f"CUDA_VISIBLE_DEVICES={visible!r}: {entry!r} names no single GPU found by index or UUID "
                f"({len(found)} found; MIG instances cannot be handed out): pass --gpus INDEX[:GB],... to say "
                "which GPUs the runner may use")
    return list(dict.fromkeys(chosen))


def _nvml_importable() -> bool:
    try:
        import pynvml  # noqa: F401 - nvidia-ml-py
    except ImportError:
        return False
    return True


def _nvml() -> list[Gpu] | None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(Gpu(str(i), round(info.total / 1024**3, 1),
                            uuid.decode() if isinstance(uuid, bytes) else uuid))
        return gpus
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def _nvidia_smi() -> list[Gpu]:
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    gpus = []
    for line in proc.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3:
            continue
        try:
            gpus.append(Gpu(fields[0], round(float(fields[2]) / 1024, 1), fields[1]))
        except ValueError:
            continue
    return gpus
