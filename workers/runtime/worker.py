"""The Worker base class: a worker is its contract plus load() and run()."""

from __future__ import annotations

import gc
import sys
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from workers.contract import WorkerArgs

from .context import JobContext

A = TypeVar("A", bound=WorkerArgs)
R = TypeVar("R", bound=BaseModel)


class Worker(ABC, Generic[A, R]):
    """Subclass, set the class attributes, implement `load` and `run`.

    Recipe: check_inputs (cheap, no heavy imports) -> load (cached by model_key) -> run -> outputs.
    Heavy imports (torch, diffusers, faster_whisper) belong inside `load`/`run`, never at module top.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Args: ClassVar[type[WorkerArgs]]
    Result: ClassVar[type[BaseModel]]

    def check_inputs(self, args: A) -> None:
        """Semantic checks beyond the schema (files exist, combinations make sense). Raise InvalidInput."""

    def model_key(self, args: A) -> str:
        """What identifies a loaded model; a warm worker reuses a model while the key is unchanged."""
        return str(getattr(args, "model", self.name))

    @abstractmethod
    def load(self, args: A, ctx: JobContext) -> Any:
        """Load the model (heavy). The returned object is cached under model_key(args)."""

    @abstractmethod
    def run(self, model: Any, args: A, ctx: JobContext) -> R:
        """Run one job with a loaded model; write files via ctx.output_path().

        Set ctx.device here, not in load(): a warm cache hit skips load()."""

    def unload(self, model: Any) -> None:
        """Release a model evicted from the warm cache."""
        del model
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def devices(self) -> list[str]:
        """Devices this worker could use, for --describe. Must not load a model."""
        import importlib.util

        found = ["cpu"]
        if importlib.util.find_spec("torch") is not None:
            import torch

            found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return found
