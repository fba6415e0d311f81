"""The out-of-memory ladder: on OOM, free memory and retry the same images with the next memory saving.

Rungs, cheapest first: VAE tiling -> smaller batches (halved down to 1) -> model CPU offload -> sequential CPU
offload. The offload rungs need an accelerator and are skipped on the CPU. Each climb is a warning; the highest
rung reached is reported. When nothing is left, the job answers `resource` (retryable).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from workers.runtime import ResourceExhausted, is_out_of_memory

T = TypeVar("T")
R = TypeVar("R")

RUNGS = ("vae_tiling", "smaller_batch", "model_offload", "sequential_offload")
_NEEDS_ACCELERATOR = {"model_offload", "sequential_offload"}


def free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class MemoryLadder:
    """Runs batches; climbs a rung on each OOM. State persists across the batches of one job."""

    def __init__(self, batch_size: int, *, accelerator: bool, vae_tiling_on: bool,
                 apply: Callable[[str], None], warn: Callable[[str], None]):
        self.batch_size = batch_size
        self.rung = "none"
        self._apply = apply
        self._warn = warn
        self._left = [r for r in RUNGS if (accelerator or r not in _NEEDS_ACCELERATOR)
                      and not (r == "vae_tiling" and vae_tiling_on)]

    def run(self, items: Sequence[T], generate: Callable[[Sequence[T]], list[R]]) -> list[R]:
        """generate(items) in chunks of the current batch size, retrying a chunk after each climb."""
        results: list[R] = []
        start = 0
        while start < len(items):
            chunk = items[start:start + self.batch_size]
            try:
                results.extend(generate(chunk))
            except Exception as exc:  # noqa: BLE001 - only allocation failures climb; the rest propagate
                if not is_out_of_memory(exc):
                    raise
                del exc
                free_memory()
                self._climb(len(chunk))
                continue
            start += len(chunk)
        return results

    def _climb(self, failed_chunk: int) -> None:
        while self._left:
            rung = self._left[0]
            if rung == "smaller_batch":
                if failed_chunk > 1:
                    self.batch_size = max(1, failed_chunk // 2)
                    self._record(rung, f"out of memory: batch size lowered to {self.batch_size}")
                    return
                self._left.pop(0)  # already at 1 image per call: nothing to halve
                continue
            self._left.pop(0)
            self._apply(rung)
            self._record(rung, f"out of memory: retrying with {rung.replace('_', ' ')}")
            return
        raise ResourceExhausted(
            "Out of memory even with VAE tiling, batch size 1" + (" and CPU offload" if self.rung.endswith("offload")
                                                                 else "") +
            ": use a smaller size, fewer steps with the refiner off, a lower precision, or a bigger GPU; retry later "
            "if other jobs share the GPU.", details={"memory_rung": self.rung})

    def _record(self, rung: str, message: str) -> None:
        self.rung = rung
        self._warn(message)
