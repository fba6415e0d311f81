"""The out-of-memory ladder: on OOM, free memory and retry the same work with the next memory saving.

A worker lists its rungs, cheapest first (SDXL: VAE tiling -> smaller batches -> model CPU offload -> sequential
CPU offload) and applies each one when asked. `smaller_batch` is the ladder's own: it halves the chunk size down
to 1. Rungs in NEEDS_ACCELERATOR are skipped on the CPU. Each climb is a warning; the highest rung reached is
reported. When nothing is left, the job answers `resource` (retryable). No torch import here: memory is freed
through torch only if a worker already imported it.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import ResourceExhausted, is_out_of_memory

T = TypeVar("T")
R = TypeVar("R")

SMALLER_BATCH = "smaller_batch"
NEEDS_ACCELERATOR = frozenset({"model_offload", "sequential_offload"})


def free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class MemoryLadder:
    """Runs batches; climbs a rung on each OOM. State persists across the batches of one job."""

    def __init__(self, rungs: Sequence[str], *, batch_size: int = 1, accelerator: bool,
                 already_on: frozenset[str] = frozenset(), apply: Callable[[str], None], warn: Callable[[str], None]):
        self.batch_size = batch_size
        self.rung = "none"
        self._apply = apply
        self._warn = warn
        self._left = [r for r in rungs if (accelerator or r not in NEEDS_ACCELERATOR) and r not in already_on]

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
            if rung == SMALLER_BATCH:
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
            f"Out of memory with every memory saving tried (last: {self.rung.replace('_', ' ')}): use a smaller size, "
            "fewer images or frames, a lower precision, or a bigger GPU; retry later if other jobs share the GPU.",
            details={"memory_rung": self.rung})

    def _record(self, rung: str, message: str) -> None:
        self.rung = rung
        self._warn(message)
