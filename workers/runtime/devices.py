"""Which CUDA devices a worker could use, found without importing torch or initialising CUDA.

`--describe` must answer in a fraction of a second, and a host may call it on every start: importing torch
(about 2 s) only to count GPUs is too slow. NVML (the `nvidia-ml-py` package) answers in milliseconds;
`nvidia-smi -L` is the fallback. CUDA_VISIBLE_DEVICES narrows the list the way CUDA itself would.
"""

from __future__ import annotations

import os
import shutil
import subprocess

_PROBE_TIMEOUT_S = 2.0


def _nvml_count() -> int | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, or NVML missing from the system: no GPU for us
        return 0


def _nvidia_smi_count() -> int:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU "))


def _visible(physical: int, mask: str | None) -> int:
    """How many devices CUDA exposes under CUDA_VISIBLE_DEVICES=mask (it stops at the first invalid entry)."""
    if mask is None:
        return physical
    count = 0
    for entry in (e.strip() for e in mask.split(",")):
        if entry.isdigit() and int(entry) < physical or entry.startswith(("GPU-", "MIG-")):
            count += 1
        else:
            break
    return min(count, physical)


def cuda_devices() -> list[str]:
    """`cuda:0`, `cuda:1`, ... as this process would number them; empty without a usable NVIDIA GPU."""
    physical = _nvml_count()
    if physical is None:
        physical = _nvidia_smi_count()
    return [f"cuda:{i}" for i in range(_visible(physical, os.environ.get("CUDA_VISIBLE_DEVICES")))]


def torch_device(requested: str) -> str:
    """`auto`/`cpu`/`cuda`/`cuda:N` -> the torch device a model will use (imports torch: call it at load time).

    A CUDA device that does not exist is `invalid_input` on `$.device`."""
    import torch

    from .errors import InvalidInput

    if requested == "cpu":
        return "cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "auto":
        return "cuda:0" if count else "cpu"
    index = int(requested.split(":", 1)[1]) if ":" in requested else 0
    if index >= count:
        raise InvalidInput.for_field("device", f"device {requested!r} requested but torch sees {count} CUDA "
                                     "device(s); use 'auto' or 'cpu'", type_="device", detail="no such CUDA device")
    return f"cuda:{index}"


def offload_problem(offload: str, device: str | None = None) -> str | None:
    """Why CPU offload cannot be used, or None. Before load (`device` None) it asks the driver without torch;
    at load it looks at the device the model resolved to."""
    if offload == "none":
        return None
    if device is None:
        return None if cuda_devices() else f"offload {offload!r} needs a CUDA device and none is visible; use 'none'"
    return None if device.startswith("cuda") else f"offload {offload!r} needs a CUDA device; use 'none' on the CPU"


def dtype_name(requested: str, device: str, cuda_default: str) -> str:
    """`auto` -> `cuda_default` on CUDA, float32 on the CPU; anything else as requested."""
    if requested == "auto":
        return cuda_default if device.startswith("cuda") else "float32"
    return requested
