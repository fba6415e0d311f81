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
    #: The `storybridge[...]` extra that installs this worker's heavy dependencies, and their top-level modules:
    #: a missing one is answered `model_unavailable` with the pip command, before any load is tried.
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()

    def check_inputs(self, args: A) -> None:
        """Semantic checks beyond the schema (files exist, combinations make sense). Raise InvalidInput."""

    #: The args fields model_key reads (advertised by `--describe`, so a runner can route warm requests).
    model_key_fields: ClassVar[tuple[str, ...]] = ("model",)

    def model_key(self, args: A) -> str:
        """What identifies a loaded model; a warm worker reuses a model while the key is unchanged."""
        return str(getattr(args, "model", self.name))

    @abstractmethod
    def load(self, args: A, ctx: JobContext) -> Any:
        """Load the model (heavy). The returned object is cached under model_key(args); give it a `device`
        attribute (`cpu`, `cuda:0`): the runtime reports the device of the model that actually ran."""

    @abstractmethod
    def run(self, model: Any, args: A, ctx: JobContext) -> R:
        """Run one job with a loaded model; write files via ctx.output_path()."""

    def device_of(self, model: Any) -> str | None:
        """The device a loaded model runs on; reported in `metrics.device`, cache hit or not."""
        device = getattr(model, "device", None)
        return None if device is None else str(device)

    def unload(self, model: Any) -> None:
        """Release a model evicted from the warm cache."""
        del model
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def devices(self) -> list[str]:
        """Devices this worker could use, for --describe. Loads no model and imports no torch."""
        from .devices import cuda_devices

        return ["cpu", *cuda_devices()]

    def missing_modules(self) -> list[str]:
        """Required modules that are not installed (found without importing them)."""
        import importlib.util

        return [m for m in self.requires if importlib.util.find_spec(m) is None]
